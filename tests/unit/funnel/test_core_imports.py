"""The pure core imports no adapter library (STYLE principle 1)."""

import pkgutil
import subprocess
import sys

import funnel

FORBIDDEN = (
    "faust",
    "mode",
    "kafka",
    "aiokafka",
    "clickhouse_driver",
    "chdb",
    "starlette",
    "uvicorn",
    "fastapi",
    "httpx",
    "requests",
    "aiohttp",
    "urllib3",
    "flask",
)


def test_core_modules_import_no_adapters() -> None:
    modules = [
        f"funnel.{m.name}"
        for m in pkgutil.walk_packages(funnel.__path__)
        if not m.name.startswith("cli")
    ]
    assert "funnel.processor" in modules
    code = (
        "import importlib, sys, json\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(__import__("json").loads(result.stdout))
    leaked = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert leaked == [], f"the core imported adapter libraries: {leaked}"
