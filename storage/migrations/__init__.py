"""Versioned schema migrations: ``NNNN_name.sql`` files applied in order by ``funnel migrate``."""
