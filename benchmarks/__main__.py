"""``python -m benchmarks``: the end-to-end freshness run (:mod:`benchmarks.bench_e2e`)."""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.bench_e2e import main

    main()
