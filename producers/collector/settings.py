"""Collector configuration: from the environment or a file, validated, with safe defaults.

Write keys are secrets: they come from ``FUNNEL_WRITE_KEYS`` (``key:site,key2:site2``) or a
file named by ``FUNNEL_WRITE_KEYS_FILE`` (JSON object ``{"key": "site"}``), never from code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["DIGEST", "CollectorSettings", "key_digest", "masked"]

DIGEST = "sha256:"


def key_digest(key: str) -> str:
    """How a write key is kept: ``sha256:<hex>``."""
    return DIGEST + hashlib.sha256(key.encode()).hexdigest()


def masked(key: str) -> str:
    """A key as it may be shown: its last four characters."""
    return "…" + key[-4:] if len(key) > 8 else "…"


class CollectorSettings(BaseModel):
    """What the collector accepts, from whom, and how long it waits for durability."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    write_keys: dict[str, str] = Field(default_factory=dict)
    """site_id by the SHA-256 of a write key (``sha256:<hex>``). Given plain keys (the
    environment's ``key:site``), they are hashed as they come in: no key is kept, shown in a
    ``repr`` or logged; a request's key is hashed and looked up by its digest."""
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
    def _hashed(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return {
                key_digest(str(k)) if not str(k).startswith(DIGEST) else str(k): str(
                    v.get_secret_value() if isinstance(v, SecretStr) else v
                )
                for k, v in value.items()
            }
        return value

    def site_for(self, key: str | None) -> str | None:
        """The site a write key may write to, or ``None`` for an unknown key. The key is
        hashed and found by its digest; the digests are then compared in constant time."""
        if not key:
            return None
        digest = key_digest(key)
        site = self.write_keys.get(digest)
        if site is None:
            return None
        stored = next(d for d in self.write_keys if d == digest)
        return site if hmac.compare_digest(stored.encode(), digest.encode()) else None

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
