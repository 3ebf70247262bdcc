"""Generate the Grafana dashboards as JSON: ``python -m dashboards.generate``.

Writes one file per dashboard into ``dashboards/grafana/dashboards/`` (``<uid>.json``), which
Grafana's provisioning loads (``dashboards/grafana/provisioning/``). The files are committed;
a test checks they equal a fresh generation, so edit the builders in
:mod:`dashboards.boards`, never the JSON. ``--check`` only compares (exit 1 when a file is
stale, missing or left over). ``--funnels FILE`` names the step labels after a custom funnel
catalog (as ``FUNNEL_FUNNELS`` does for the pipeline).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from funnel.funnels import FunnelCatalog

from .boards.channels import channels
from .boards.leads import leads
from .boards.live import live
from .boards.model import Dashboard
from .boards.overview import overview
from .boards.pipeline import pipeline

__all__ = ["OUTPUT", "build_all", "main", "render"]

OUTPUT = Path(__file__).resolve().parent / "grafana" / "dashboards"


def build_all(catalog: FunnelCatalog | None = None) -> list[Dashboard]:
    """Every dashboard, in menu order (uids are unique and stable)."""
    catalog = catalog or FunnelCatalog.default()
    return [overview(catalog), channels(), leads(), live(), pipeline()]


def render(dashboard: Dashboard) -> str:
    """The file content for ``dashboard``: stable key order, two-space indent, final newline."""
    return json.dumps(dashboard.to_json(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.generate", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUTPUT, help="output folder")
    parser.add_argument(
        "--funnels",
        type=Path,
        default=os.environ.get("FUNNEL_FUNNELS") or None,
        help="funnel catalog (TOML) for the step names; default: the shipped funnels",
    )
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)
    catalog = FunnelCatalog.from_file(args.funnels) if args.funnels else FunnelCatalog.default()
    files = {f"{d.uid}.json": render(d) for d in build_all(catalog)}
    out: Path = args.out
    if args.check:
        existing = {p.name for p in out.glob("*.json")} if out.is_dir() else set()
        stale = sorted(
            name
            for name, text in files.items()
            if not (out / name).is_file() or (out / name).read_text("utf-8") != text
        )
        extra = sorted(existing - set(files))
        for name in stale:
            print(f"stale or missing: {out / name}", file=sys.stderr)
        for name in extra:
            print(f"not generated (remove it): {out / name}", file=sys.stderr)
        return 1 if stale or extra else 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, "utf-8")
        print(out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
