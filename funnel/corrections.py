"""Corrections: the facts that turn what was landed into what a refolded history says.

Used when an out-of-order event or an identity merge changes a person's history: stage rows
are retracted with ``sign = -1`` and credits with negated credit rows, so sums in ClickHouse
(``sum(sign)``, ``sum(credit)``) always give the current answer.
"""

from __future__ import annotations

from msgspec.structs import replace

from funnel.facts import AttributionRow, Fact, LeadChange, StageReached

__all__ = ["corrections"]


def corrections(before: list[Fact], after: list[Fact], *, temperature: str = "") -> list[Fact]:
    """The facts that turn what ``before`` landed into what ``after`` says.

    Stage facts are keyed by person, funnel and step; a changed or vanished one is retracted
    (``sign = -1``) and the new one added. Credits are keyed by conversion, model, channel and
    campaign; a changed or vanished one is retracted by a row with the negated credit, so
    ``sum(credit)`` per conversion and model stays exactly 1. A lead change is emitted when
    the final temperature differs (``temperature``: the lead's temperature before both, when
    they are the facts of a part of the person's history). Event rows never change.
    """
    out: list[Fact] = []
    old_stages = {_stage_key(f): f for f in before if isinstance(f, StageReached)}
    new_stages = {_stage_key(f): f for f in after if isinstance(f, StageReached)}
    for stage_key, stage in old_stages.items():
        if new_stages.get(stage_key) != stage:
            out.append(replace(stage, sign=-1))
    for stage_key, stage in new_stages.items():
        if old_stages.get(stage_key) != stage:
            out.append(stage)
    old_credits = _credit_totals(before)
    new_credits = _credit_totals(after)
    for credit_key, credit in old_credits.items():
        if new_credits.get(credit_key) != credit:
            out.append(
                replace(credit, credit=-credit.credit, revenue_credit=-credit.revenue_credit)
            )
    for credit_key, credit in new_credits.items():
        if old_credits.get(credit_key) != credit:
            out.append(credit)
    old_leads = [f for f in before if isinstance(f, LeadChange)]
    new_leads = [f for f in after if isinstance(f, LeadChange)]
    previous = old_leads[-1].temperature if old_leads else temperature
    if new_leads and new_leads[-1].temperature != previous:
        out.append(replace(new_leads[-1], previous=previous))
    return out


def _stage_key(fact: StageReached) -> tuple[str, str, int]:
    return (fact.person_id, fact.funnel, fact.step_index)


def _credit_totals(facts: list[Fact]) -> dict[tuple[str, str, str, str, str], AttributionRow]:
    """The net credit per conversion, model, channel and campaign (corrections included)."""
    totals: dict[tuple[str, str, str, str, str], AttributionRow] = {}
    for f in facts:
        if not isinstance(f, AttributionRow):
            continue
        key = (f.person_id, f.conversion_id, f.model, f.channel, f.campaign)
        seen = totals.get(key)
        totals[key] = (
            f
            if seen is None
            else replace(
                seen,
                credit=seen.credit + f.credit,
                revenue_credit=seen.revenue_credit + f.revenue_credit,
            )
        )
    return totals
