"""The core's configuration: channels, funnels, lead rules, attribution settings and the
bounds of the state (all configured data, no I/O beyond reading the given TOML files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from funnel.attribution import AttributionSettings
from funnel.channels import ChannelRules
from funnel.events import EventType
from funnel.funnels import FunnelCatalog
from funnel.leads import LeadRules
from funnel.settings import DEDUP_HORIZON

__all__ = ["CoreConfig"]


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """What the core needs to know (all configured data)."""

    channels: ChannelRules
    funnels: FunnelCatalog
    leads: LeadRules = field(default_factory=LeadRules.default)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    conversions: frozenset[EventType] = frozenset(
        {EventType.LEAD, EventType.ORDER, EventType.PAYMENT, EventType.REPEAT}
    )
    dedup_horizon: timedelta = DEDUP_HORIZON
    lateness: timedelta = timedelta(hours=24)
    max_touches: int = 200
    max_log: int = 200
    checkpoint_every: int = 16
    """A person's fold is checkpointed every this many logged events (an event out of order
    is folded again from the checkpoint before it)."""

    @classmethod
    def default(cls) -> CoreConfig:
        return cls.from_files()

    @classmethod
    def from_files(
        cls,
        funnels_file: Path | None = None,
        channels_file: Path | None = None,
        *,
        leads: LeadRules | None = None,
    ) -> CoreConfig:
        """The shipped defaults, with funnels and/or channel rules from TOML files and lead
        rules as loaded (:func:`funnel.leads.load_lead_rules`)."""
        return cls(
            channels=(
                ChannelRules.from_file(channels_file) if channels_file else ChannelRules.default()
            ),
            funnels=(
                FunnelCatalog.from_file(funnels_file) if funnels_file else FunnelCatalog.default()
            ),
            leads=leads if leads is not None else LeadRules.default(),
        )
