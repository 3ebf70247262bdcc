"""Configuration shipped with funnel: channel rules and funnel definitions (TOML data)."""
