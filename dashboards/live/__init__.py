"""The live page of ``funnel serve`` (``GET /``): funnel bars, a channel table with an
attribution model switcher, the event rate.

One self-contained HTML file (``live.html``, nothing external loads) that polls the report API
(:mod:`storage.reports.api`); ``funnel serve`` hands it to the API, which serves it.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["page"]


def page() -> bytes:
    """The page's HTML."""
    return resources.files(__package__).joinpath("live.html").read_bytes()
