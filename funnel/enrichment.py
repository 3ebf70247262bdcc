"""Server-side enrichment of incoming events (DESIGN §4): pure functions of what arrived.

* :func:`anonymise_ip` drops the last octet of IPv4 and the last 80 bits of IPv6.
* :func:`parse_user_agent` names browser, OS and device, and flags bots: known crawlers and
  headless or automated browsers are *flagged*, never dropped.
* :func:`correct_clock` moves ``occurred_at`` by the sender's clock skew (``sent_at`` against
  ``received_at``) and clamps events from the future.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

from ua_parser import parse

__all__ = [
    "ClockCorrection",
    "ClockCorrector",
    "UserAgentInfo",
    "anonymise_ip",
    "correct_clock",
    "parse_user_agent",
]

_AUTOMATION = re.compile(
    r"headless|phantomjs|puppeteer|playwright|selenium|webdriver|lighthouse|"
    r"bot\b|bot/|crawler|spider|slurp|curl/|wget/|python-requests|python-httpx|aiohttp|"
    r"go-http-client|okhttp|java/|libwww|scrapy|httpclient",
    re.IGNORECASE,
)
_MILLISECOND = timedelta(milliseconds=1)


@lru_cache(maxsize=65_536)
def anonymise_ip(ip: str | None) -> str:
    """``203.0.113.77`` → ``203.0.113.0``; IPv6 keeps its first 48 bits; junk → ``""``.

    Cached: a visitor's requests repeat its address, and parsing one costs more than the
    rest of a small request's intake."""
    if not ip:
        return ""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ""
    if address.version == 4:
        return str(ipaddress.IPv4Address(int(address) & 0xFFFF_FF00))
    return str(ipaddress.IPv6Address(int(address) >> 80 << 80))


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    browser: str
    os: str
    device: str
    is_bot: bool


@lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str | None) -> UserAgentInfo:
    """Browser, OS and device families and a bot flag (cached: a visitor sends one UA)."""
    if not user_agent:
        return UserAgentInfo("", "", "", is_bot=False)
    result = parse(user_agent[:1000])
    browser = result.user_agent.family if result.user_agent else ""
    system = result.os.family if result.os else ""
    device = result.device.family if result.device else ""
    is_bot = device == "Spider" or bool(_AUTOMATION.search(user_agent))
    return UserAgentInfo(browser, system, device, is_bot)


class ClockCorrection(NamedTuple):
    """The corrected time of one event (a tuple: built once per event on the intake path)."""

    occurred_at: datetime
    skew_ms: int | None
    clamped: bool


def correct_clock(
    occurred_at: datetime,
    sent_at: datetime | None,
    received_at: datetime,
    future_bound: timedelta,
) -> ClockCorrection:
    """Correct the sender's clock and clamp the future.

    With ``sent_at``, the sender's clock is off by ``sent_at - received_at`` (network time is
    small against typical skew), so ``occurred_at`` moves by the same amount. An event still
    more than ``future_bound`` ahead of ``received_at`` is clamped to ``received_at`` and
    flagged.
    """
    return ClockCorrector(sent_at, received_at, future_bound).correct(occurred_at)


class ClockCorrector:
    """:func:`correct_clock` for the events of one sending: the skew is worked out once.

    A sender stamps one ``sent_at`` on a whole batch, so the collector builds one corrector
    per batch (per distinct ``sent_at``) and corrects each event with it.
    """

    __slots__ = ("_latest", "_received_at", "_skew", "_skew_ms")

    def __init__(
        self, sent_at: datetime | None, received_at: datetime, future_bound: timedelta
    ) -> None:
        self._received_at = received_at
        self._latest = received_at + future_bound
        self._skew = None if sent_at is None else sent_at - received_at
        self._skew_ms = None if self._skew is None else int(self._skew / _MILLISECOND)

    def correct(self, occurred_at: datetime) -> ClockCorrection:
        """``occurred_at`` on the collector's clock, clamped if still in the future."""
        if self._skew is not None:
            occurred_at = occurred_at - self._skew
        if occurred_at > self._latest:
            return ClockCorrection(self._received_at, self._skew_ms, clamped=True)
        return ClockCorrection(occurred_at, self._skew_ms, clamped=False)
