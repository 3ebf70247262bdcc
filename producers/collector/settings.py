"""Collector configuration: from the environment or a file, validated, with safe defaults.

Write keys are secrets: they come from ``FUNNEL_WRITE_KEYS`` (``key:site,key2:site2``) or a
file named by ``FUNNEL_WRITE_KEYS_FILE`` (JSON object ``{"key": "site"}``), never from code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["CollectorSettings"]


class CollectorSettings(BaseModel):
    """What the collector accepts, from whom, and how long it waits for durability."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    write_keys: dict[str, SecretStr] = Field(default_factory=dict)
    """site_id by write key (the key is the dict key; values are site ids)."""
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch: int = Field(default=500, ge=1, le=10_000)
    future_bound_s: float = Field(default=600.0, ge=0)
    ack_timeout_s: float = Field(default=10.0, gt=0)
    retry_after_s: int = Field(default=5, ge=1)
    trust_forwarded_for: bool = False
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
    """Host names the read side (live page, report API) answers to: a web page that rebinds
    its own name to this machine's address (DNS rebinding) gets a 400, not the data.
    ``*`` allows any; ``*.example.com`` any subdomain. Ingestion answers any host."""

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            hosts = tuple(str(h).strip().lower() for h in value if str(h).strip())
            if not hosts:
                raise ValueError("allowed_hosts needs at least one host name (or *)")
            return hosts
        return value

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request with this ``Host`` header may use the read side."""
        if "*" in self.allowed_hosts:
            return True
        host = (host_header or "").strip().lower()
        if host.startswith("["):  # [::1]:8000
            host = host[: host.find("]") + 1] if "]" in host else host
        else:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return any(
            host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:]))
            for allowed in self.allowed_hosts
        )

    @field_validator("write_keys", mode="before")
    @classmethod
    def _as_secret_sites(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        return value

    def site_for(self, key: str | None) -> str | None:
        """The site a write key may write to, or ``None`` for an unknown key."""
        if not key:
            return None
        site = self.write_keys.get(key)
        return site.get_secret_value() if site is not None else None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: object
    ) -> CollectorSettings:
        """Settings from ``FUNNEL_*`` variables (see the README), then ``overrides``."""
        env = os.environ if env is None else env
        keys: dict[str, str] = {}
        if path := env.get("FUNNEL_WRITE_KEYS_FILE"):
            keys.update(json.loads(Path(path).read_text("utf-8")))
        for pair in filter(None, (p.strip() for p in env.get("FUNNEL_WRITE_KEYS", "").split(","))):
            key, sep, site = pair.partition(":")
            if not sep or not key or not site:
                raise ValueError("FUNNEL_WRITE_KEYS must look like 'key:site,key2:site2'")
            keys[key] = site
        values: dict[str, object] = {"write_keys": keys}
        if hosts := env.get("FUNNEL_ALLOWED_HOSTS"):
            values["allowed_hosts"] = hosts
        if origins := env.get("FUNNEL_CORS_ORIGINS"):
            values["cors_origins"] = tuple(o.strip() for o in origins.split(",") if o.strip())
        for name, var in (
            ("max_body_bytes", "FUNNEL_MAX_BODY_BYTES"),
            ("max_batch", "FUNNEL_MAX_BATCH"),
            ("ack_timeout_s", "FUNNEL_ACK_TIMEOUT_S"),
        ):
            if var in env:
                values[name] = env[var]
        values.update(overrides)
        return cls.model_validate(values)
