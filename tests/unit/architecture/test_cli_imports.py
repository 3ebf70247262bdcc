"""``funnel --help`` (and every command's ``--help``) loads no adapter library: the CLI
imports its adapters inside the commands that use them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ADAPTERS = (
    "pyarrow",
    "chdb",
    "faust",
    "mode",
    "kafka",
    "aiokafka",
    "clickhouse_driver",
    "starlette",
    "uvicorn",
    "prometheus_client",
)


@pytest.mark.parametrize(
    "args", [["--help"], ["report", "funnel", "--help"], ["serve", "--help"], ["demo", "--help"]]
)
def test_help_loads_no_adapter(args: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from funnel.cli import main\n"
        f"result = CliRunner().invoke(main, {args!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m.split(".")[0] for m in json.loads(done.stdout.splitlines()[-1])}
    assert sorted(loaded & set(ADAPTERS)) == []
