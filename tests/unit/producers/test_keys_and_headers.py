"""Issue 19, in part: write keys are kept as digests (no repr, log or file of the settings
shows one), and every response carries the hardening headers; the live page a CSP that lets
only its own inline script and style run."""

from __future__ import annotations

import re

import pytest

from producers.collector.settings import CollectorSettings, key_digest, masked
from storage.reports.api import page_policy

KEY = "wk_9f2c41d7be5a03118c"


def test_keys_are_kept_as_digests_and_never_shown() -> None:
    settings = CollectorSettings(write_keys={KEY: "shop"})
    assert KEY not in repr(settings)
    assert KEY not in settings.model_dump_json()
    assert "shop" in repr(settings)  # the site is no secret
    assert settings.site_for(KEY) == "shop"
    assert settings.site_for(KEY + "x") is None
    assert settings.site_for("") is None
    # a key file may hold digests only
    hashed = CollectorSettings(write_keys={key_digest(KEY): "shop"})
    assert hashed.site_for(KEY) == "shop"
    env = CollectorSettings.from_env({"FUNNEL_WRITE_KEYS": f"{KEY}:shop"})
    assert KEY not in repr(env)
    assert env.site_for(KEY) == "shop"
    assert masked(KEY) == "…118c"


def test_the_live_page_runs_only_its_own_inline_code() -> None:
    from dashboards.live import page

    policy = page_policy(page())
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert len(re.findall(r"script-src 'sha256-[A-Za-z0-9+/=]+'", policy)) == 1
    assert "unsafe-inline" not in policy
    assert page_policy(b"<html><body>no code</body></html>").count("'none'") >= 3


READ = "rk_5d1e0c9a77b2f64a31"


def test_read_keys_are_digests_with_their_sites() -> None:
    settings = CollectorSettings.from_env({"FUNNEL_READ_KEYS": f"{READ}:shop|blog,all-sites-key:*"})
    assert READ not in repr(settings)
    assert READ not in settings.model_dump_json()
    assert settings.read_sites(READ) == ("shop", "blog")
    assert settings.read_sites("all-sites-key") == ("*",)
    assert settings.read_sites(READ[:-1]) is None
    assert settings.read_sites(None) is None
    assert CollectorSettings(read_keys={key_digest(READ): ["shop"]}).read_sites(READ) == ("shop",)
    with pytest.raises(ValueError, match="key:site1"):
        CollectorSettings.from_env({"FUNNEL_READ_KEYS": READ})


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lookup by digest is followed by :func:`hmac.compare_digest` of the digests, for
    write and read keys alike (the code path; timing itself is not measurable here)."""
    import producers.collector.settings as module

    compared: list[tuple[bytes, bytes]] = []
    real = module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(module.hmac, "compare_digest", spy)
    settings = CollectorSettings(write_keys={KEY: "shop"}, read_keys={READ: "*"})
    assert settings.site_for(KEY) == "shop"
    assert settings.read_sites(READ) == ("*",)
    digests = [key_digest(KEY).encode(), key_digest(READ).encode()]
    assert compared == [(d, d) for d in digests]
