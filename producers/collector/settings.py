"""Collector configuration: from the environment or a file, validated, with safe defaults.

Write keys are secrets: they come from ``FUNNEL_WRITE_KEYS`` (``key:site,key2:site2``) or a
file named by ``FUNNEL_WRITE_KEYS_FILE`` (JSON object ``{"key": "site"}``), never from code.
Read keys (the report API, the live page, ``/metrics``) likewise: ``FUNNEL_READ_KEYS``
(``key:site1|site2,key2:*``) or ``FUNNEL_READ_KEYS_FILE`` (``{"key": ["site"] or "*"}``).
A key file may hold ``sha256:<hex>`` digests instead of keys (``funnel keys`` writes those).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from producers.collector.limits import Limit, RateLimits

__all__ = ["DIGEST", "CollectorSettings", "key_digest", "masked"]

T = TypeVar("T")

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

    rate_limits: RateLimits | None = RateLimits()
    """Requests per client address, per key, and with a wrong key (:mod:`.limits`);
    ``None``: none (a load test)."""
    read_keys: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """The sites a read key may read (``("*",)``: all, and ``/metrics``), by its digest as
    for write keys."""

    @field_validator("read_keys", mode="before")
    @classmethod
    def _hashed_read(cls, value: object) -> object:
        if isinstance(value, Mapping):
            hashed: dict[str, tuple[str, ...]] = {}
            for k, v in value.items():
                plain = str(k.get_secret_value() if isinstance(k, SecretStr) else k)
                sites = (v,) if isinstance(v, str) else tuple(str(s) for s in v)
                if not sites or any(not s for s in sites):
                    raise ValueError("a read key needs its sites (or *)")
                hashed[plain if plain.startswith(DIGEST) else key_digest(plain)] = sites
            return hashed
        return value

    def read_sites(self, key: str | None) -> tuple[str, ...] | None:
        """The sites a read key may read (``("*",)`` for all), or ``None`` for no valid key
        (found by digest, compared in constant time, as :meth:`site_for`)."""
        return _lookup(self.read_keys, key)

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
        return _lookup(self.write_keys, key)

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
        reads: dict[str, object] = {}
        if path := env.get("FUNNEL_READ_KEYS_FILE"):
            reads.update(json.loads(Path(path).read_text("utf-8")))
        for pair in filter(None, (p.strip() for p in env.get("FUNNEL_READ_KEYS", "").split(","))):
            key, sep, sites = pair.partition(":")
            if not sep or not key or not sites:
                raise ValueError("FUNNEL_READ_KEYS must look like 'key:site1|site2,key2:*'")
            reads[key] = tuple(s.strip() for s in sites.split("|"))
        values: dict[str, object] = {"write_keys": keys, "read_keys": reads}
        limits = {
            field: Limit.parse(env[var])
            for field, var in (
                ("per_address", "FUNNEL_RATE_LIMIT"),
                ("per_key", "FUNNEL_KEY_RATE_LIMIT"),
                ("failed_keys", "FUNNEL_AUTH_FAIL_LIMIT"),
            )
            if env.get(var, "").strip().lower() not in ("", "off")
        }
        off = env.get("FUNNEL_RATE_LIMIT", "").strip().lower() == "off"
        values["rate_limits"] = None if off else RateLimits(**limits)
        forwarded = env.get("FUNNEL_TRUST_FORWARDED_FOR", "").strip().lower()
        values["trust_forwarded_for"] = forwarded in ("1", "true", "yes")
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


def _lookup(table: Mapping[str, T], key: str | None) -> T | None:
    """``table``'s entry for the digest of ``key``: looked up by digest, then the digests
    compared in constant time (the lookup alone would answer by equality)."""
    if not key:
        return None
    digest = key_digest(key)
    found = table.get(digest)
    if found is None:
        return None
    stored = next(d for d in table if d == digest)
    return found if hmac.compare_digest(stored.encode(), digest.encode()) else None
