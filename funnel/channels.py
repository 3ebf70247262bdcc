"""Channel classification (DESIGN §5): click id → UTM medium/source → referrer → direct.

The grouping is data (:file:`funnel/defaults/channels.toml`), loaded into :class:`ChannelRules`;
:meth:`ChannelRules.classify` is a pure function of an event's context and the person's
previous touch.
"""

from __future__ import annotations

import operator
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec
from pydantic import BaseModel, ConfigDict, model_validator

from funnel.events import CLICK_ID_PARAMS, Context

__all__ = ["DIRECT", "ChannelRule", "ChannelRules", "Touch", "host_of"]

DIRECT = "Direct"
_MEMO_SIZE = 20_000
"""Classifications remembered per rule set (cleared when full)."""


class Touch(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A classified touch: the channel and the marketing dimensions that came with it."""

    channel: str
    source: str = ""
    medium: str = ""
    campaign: str = ""
    term: str = ""
    content: str = ""
    referrer_host: str = ""


class ChannelRule(BaseModel):
    """One rule: a channel and exactly one kind of condition (see channels.toml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str
    click_ids: tuple[str, ...] = ()
    mediums: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    url_params: tuple[str, ...] = ()
    tagged: bool = False
    referrer_hosts: tuple[str, ...] = ()
    external_referrer: bool = False
    source: str = ""
    medium: str = ""

    @model_validator(mode="after")
    def _one_condition(self) -> ChannelRule:
        kinds = [
            bool(self.click_ids),
            bool(self.mediums or self.sources),
            self.tagged,
            bool(self.referrer_hosts),
            self.external_referrer,
        ]
        if sum(kinds) != 1:
            raise ValueError(
                f"rule for {self.channel!r} must have exactly one kind of condition "
                "(click_ids, mediums/sources, tagged, referrer_hosts, external_referrer)"
            )
        for pattern in self.referrer_hosts:
            re.compile(pattern)
        return self

    @cached_property
    def _host_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.referrer_hosts)

    def matches(self, ctx: _Signals) -> bool:
        """Whether this rule applies to the signals of one event."""
        if self.click_ids:
            return any(ctx.click_ids.get(name) for name in self.click_ids)
        if self.mediums or self.sources:
            hit = (ctx.medium in self.mediums) if self.mediums else (ctx.source in self.sources)
            return hit and (
                not self.url_params or any(p in ctx.url_params for p in self.url_params)
            )
        if self.tagged:
            return bool(ctx.medium or ctx.source)
        if not ctx.referrer_host or ctx.same_site:
            return False
        if self.referrer_hosts:
            return any(p.search(ctx.referrer_host) for p in self._host_patterns)
        return True  # external_referrer


@dataclass(frozen=True, slots=True)
class _Signals:
    click_ids: dict[str, str]
    medium: str
    source: str
    url_params: frozenset[str]
    referrer_host: str
    same_site: bool


class ChannelRules(BaseModel):
    """An ordered list of channel rules; the first match wins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    direct: str = DIRECT
    rule: tuple[ChannelRule, ...]

    @cached_property
    def _memo(self) -> dict[tuple[object, ...], Touch | None]:
        # A cached property, not a pydantic private attribute: those are read through
        # ``BaseModel.__getattr__``, which cost ~10 µs per event here.
        return {}

    @classmethod
    def default(cls) -> ChannelRules:
        """The grouping shipped with funnel (DESIGN §5)."""
        text = resources.files("funnel.defaults").joinpath("channels.toml").read_text("utf-8")
        return cls.model_validate(tomllib.loads(text))

    @classmethod
    def from_file(cls, path: Path) -> ChannelRules:
        """Rules from a TOML file in the format of the shipped default."""
        return cls.model_validate(tomllib.loads(path.read_text("utf-8")))

    def classify(self, context: Context) -> Touch | None:
        """Classify one event's context on its own.

        Returns ``None`` for a same-site referrer with no tags (the visit goes on: keep the
        previous channel) and a Direct touch when there is no signal at all.
        """
        # The answer depends on these fields only (click ids by presence, not value), and
        # pages, referrers and campaigns repeat: remember recent answers (bounded).
        key = _SIGNALS(context)
        clicked = _CLICK_IDS(context)
        if any(clicked):
            key = (*key, tuple(name for name, v in zip(CLICK_ID_PARAMS, clicked, strict=True) if v))
        memo = self._memo
        if key in memo:
            return memo[key]
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        touch = memo[key] = self._classify(context)
        return touch

    def _classify(self, context: Context) -> Touch | None:
        referrer_host = host_of(context.referrer)
        signals = _Signals(
            click_ids=context.click_ids(),
            medium=(context.utm_medium or "").strip().lower(),
            source=(context.utm_source or "").strip().lower(),
            url_params=frozenset(parse_qs(urlsplit(context.url or "").query)),
            referrer_host=referrer_host,
            same_site=bool(referrer_host) and referrer_host == host_of(context.url),
        )
        for rule in self.rule:
            if rule.matches(signals):
                return Touch(
                    channel=rule.channel,
                    source=signals.source or _implied_source(rule, signals),
                    medium=signals.medium or rule.medium,
                    campaign=context.utm_campaign or "",
                    term=context.utm_term or "",
                    content=context.utm_content or "",
                    referrer_host=referrer_host,
                )
        if signals.same_site:
            return None
        return Touch(self.direct, referrer_host=referrer_host)

    def touch_for(self, context: Context, previous: Touch | None, *, inherit: bool) -> Touch:
        """The touch an event counts as.

        Its own signal wins. A same-site referrer keeps ``previous``. With no signal at all an
        impression or click is Direct (``inherit=False``), while a conversion event such as a
        back-end order (``inherit=True``) belongs to the person's previous touch.
        """
        return self.resolve(self.classify(context), previous, inherit=inherit)

    def resolve(self, own: Touch | None, previous: Touch | None, *, inherit: bool) -> Touch:
        """:meth:`touch_for` from the event's own classification (:meth:`classify`)."""
        if own is None or (inherit and own.channel == self.direct and not own.referrer_host):
            return previous if previous is not None else Touch(self.direct)
        return own


def _implied_source(rule: ChannelRule, signals: _Signals) -> str:
    if signals.click_ids and rule.click_ids:
        name = next(n for n in rule.click_ids if signals.click_ids.get(n))
        return _CLICK_ID_SOURCES.get(name, rule.source)
    return signals.referrer_host or rule.source


_SIGNALS = operator.attrgetter(
    "url", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"
)
"""The context's fields a classification reads, besides click ids (by presence)."""
_CLICK_IDS = operator.attrgetter(*CLICK_ID_PARAMS)

_CLICK_ID_SOURCES = {
    "gclid": "google",
    "msclkid": "bing",
    "yclid": "yandex",
    "fbclid": "facebook",
    "ttclid": "tiktok",
    "li_fat_id": "linkedin",
    "twclid": "twitter",
}


def host_of(url: str | None) -> str:
    """The lower-case host of a URL, without a leading ``www.``; empty if there is none."""
    if not url:
        return ""
    host = (urlsplit(url if "//" in url else f"//{url}").hostname or "").lower()
    return host.removeprefix("www.")
