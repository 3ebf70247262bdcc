"""``funnel report`` and the owner of an embedded store (DESIGN §11).

With ``funnel serve`` running on a chDB store, ``funnel report --store chdb://<dir>`` asks it
over HTTP (chDB would refuse to open the directory) and prints what its API answers; without
it — stopped, or only a stale owner file left — the command opens the store and prints the
same, in every format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from producers.messiness import Mess, arrivals
from producers.replay import send_http
from producers.simulator import simulate
from storage.reports.owner import OWNER_FILE, Owner, write_owner
from tests.funnel_serve import funnel_serve

KEY = "owner-key"
COMMANDS = {
    "funnel": ["funnel", "--by", "channel"],
    "attribution": ["attribution"],
    "channels": ["channels", "--model", "linear"],
    "asked": ["funnel", "--steps", "impression,click", "--where", "utm_medium!=email"],
    "people": ["people", "--steps", "impression,click", "--status", "dropped"],
    "paths": ["paths", "--show", "assists"],
}
API = {
    "funnel": "/api/reports/funnel?by=channel",
    "attribution": "/api/reports/attribution",
    "channels": "/api/reports/channels?model=linear",
    "asked": "/api/reports/funnel?steps=impression,click&where=utm_medium!%3Demail",
    "people": "/api/reports/people?steps=impression,click&status=dropped",
    "paths": "/api/reports/paths?show=assists",
}


def report(store: Path, command: list[str], fmt: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "funnel.cli",
            "report",
            *command,
            "--store",
            f"chdb://{store}",
            "--format",
            fmt,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_report_asks_the_running_owner_and_opens_the_store_without_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    sim = simulate(300, seed=11, site_id="shop")
    stream = arrivals(sim.events, Mess(), seed=11)
    through_owner: dict[tuple[str, str], str] = {}
    with funnel_serve(store, f"{KEY}:shop", tmp_path / "serve.log") as served:
        sent = send_http(stream, served.url, KEY, size=100)
        assert sent.accepted == len(sim.events)  # acknowledged means committed
        for name, command in COMMANDS.items():
            api_text = served.get_text(API[name])
            for fmt in ("json", "table", "csv"):
                through_owner[(name, fmt)] = report(store, command, fmt)
            assert through_owner[(name, "json")] == api_text
        funnel = json.loads(through_owner[("funnel", "json")])
        # By entry channel: each person under every channel they entered through (a person
        # whose chains entered through two channels counts in both, DESIGN §6).
        entered = sum(r["steps"][0]["count"] for r in funnel)
        channels = [{p.channel, *p.touch_channels.values()} for p in sim.truth.persons.values()]
        assert 300 <= entered <= sum(map(len, channels))
        bad = subprocess.run(
            [
                sys.executable,
                "-m",
                "funnel.cli",
                "report",
                "funnel",
                "--funnel",
                "nope",
                "--store",
                f"chdb://{store}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert bad.returncode == 2  # refused by the owner, as a direct run would be
        assert "unknown funnel 'nope'" in bad.stderr

    assert not (store / OWNER_FILE).exists()
    # Opened directly, the store prints the same (every format of one report; the formats'
    # equivalence for every shape of result is a unit test of the catalog).
    direct = [("funnel", "table"), ("funnel", "csv"), *((name, "json") for name in COMMANDS)]
    for name, fmt in direct:
        assert report(store, COMMANDS[name], fmt) == through_owner[(name, fmt)], (name, fmt)

    # A stale owner file (its process is gone) is ignored: the store is opened directly.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    write_owner(store, Owner(url="http://127.0.0.1:9", pid=int(gone.stdout), database="funnel"))
    assert report(store, COMMANDS["funnel"], "json") == through_owner[("funnel", "json")]
    assert os.path.exists(store / OWNER_FILE)  # left for its owner to clean; harmless
