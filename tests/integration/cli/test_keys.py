"""``funnel keys`` (issue 19): a key is shown once, its file keeps the digest only (mode
0600), the collector reading the file accepts the key, and a revoked key is refused."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner

from funnel.cli import main
from producers.collector.settings import CollectorSettings


def test_keys_made_listed_and_revoked_are_what_the_collector_accepts(tmp_path: Path) -> None:
    runner = CliRunner()
    writes, reads = tmp_path / "write-keys.json", tmp_path / "read-keys.json"

    def keys(*args: str) -> str:
        result = runner.invoke(main, ["keys", *args])
        assert result.exit_code == 0, result.output
        return str(result.stdout).strip()

    shop = keys("add", "--site", "shop", "--file", str(writes))
    blog = keys("add", "--site", "blog", "--file", str(writes))
    reader = keys("add", "--read", "--site", "shop", "--site", "blog", "--file", str(reads))
    assert shop.startswith("wk_")
    assert reader.startswith("rk_")
    for path in (writes, reads):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = path.read_text()
        assert shop not in text
        assert blog not in text
        assert reader not in text
    env = {"FUNNEL_WRITE_KEYS_FILE": str(writes), "FUNNEL_READ_KEYS_FILE": str(reads)}
    settings = CollectorSettings.from_env(env)
    assert settings.site_for(shop) == "shop"
    assert settings.site_for(blog) == "blog"
    assert settings.read_sites(reader) == ("shop", "blog")

    listed = keys("list", "--file", str(writes)).splitlines()
    assert len(listed) == 2
    assert shop not in "".join(listed)
    by_site = {line.split()[-1]: line.split()[0] for line in listed}
    keys("revoke", by_site["blog"], "--file", str(writes))  # by the start of its digest
    keys("revoke", shop, "--file", str(writes))  # by the key itself
    assert json.loads(writes.read_text()) == {}
    assert CollectorSettings.from_env(env).site_for(shop) is None

    refused = runner.invoke(main, ["keys", "add", "--site", "*", "--file", str(writes)])
    assert refused.exit_code == 2
    assert "exactly one site" in refused.output
    unknown = runner.invoke(main, ["keys", "revoke", "sha256:00", "--file", str(writes)])
    assert unknown.exit_code == 1
    assert "0 keys match" in unknown.output
