"""The website tracker script (``t.js``), served minified by the collector."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import rjsmin

__all__ = ["tracker_script"]


@lru_cache(maxsize=1)
def tracker_script() -> bytes:
    """``t.js`` minified (rjsmin keeps it dependency-free and readable in the repository)."""
    source = resources.files("producers.tracker").joinpath("t.js").read_text("utf-8")
    return str(rjsmin.jsmin(source)).encode()
