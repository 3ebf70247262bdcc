"""Issue 19, in part: write keys are kept as digests (no repr, log or file of the settings
shows one), and every response carries the hardening headers; the live page a CSP that lets
only its own inline script and style run."""

from __future__ import annotations

import re

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
