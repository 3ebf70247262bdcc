"""Customer arithmetic: the temperature a lead is reported under (issue 12)."""

from __future__ import annotations

from funnel.customers import PersonFacts, forecast, lead_stats

DAY = 86_400_000


def person(
    paid: int | None, changes: tuple[tuple[int, str], ...], lead: int = 0, amount: float = 50.0
) -> PersonFacts:
    return PersonFacts(
        site_id="s",
        person_id="p",
        first_ms=0,
        lead_ms=lead,
        first_paid_ms=paid,
        last_paid_ms=paid,
        purchases=int(paid is not None),
        revenue=amount if paid is not None else 0.0,
        first_payment=amount if paid is not None else 0.0,
        touches_before_sale=0,
        group="",
        temperatures=changes,
    )


# cold → warm → hot → pays (the payment closes the order: warm at that very moment) → cools
PAID_HOT = person(
    3 * DAY,
    ((0, "cold"), (1 * DAY, "warm"), (2 * DAY, "hot"), (3 * DAY, "warm"), (40 * DAY, "cold")),
)


def test_a_client_is_reported_at_the_temperature_they_paid_at() -> None:
    assert PAID_HOT.temperature_at_conversion() == "hot"
    assert PAID_HOT.temperature_at(3 * DAY) == "warm"  # the change the payment made


def test_an_open_lead_is_reported_at_its_current_temperature() -> None:
    assert person(None, ((0, "hot"), (30 * DAY, "cold"))).temperature_at_conversion() == "cold"
    assert person(None, ()).temperature_at_conversion() == "cold"
    # Paid before becoming a lead: not a client of the lead, so the current temperature.
    early = person(DAY, ((2 * DAY, "warm"),), lead=2 * DAY)
    assert early.temperature_at_conversion() == "warm"
    assert lead_stats([early]).clients == 0


def test_the_forecast_prices_first_payments_at_the_temperature_paid_at() -> None:
    paid_warm = person(5 * DAY, ((0, "warm"), (5 * DAY, "cold")), amount=500.0)
    open_hot = person(None, ((60 * DAY, "hot"),), lead=60 * DAY)
    [row] = forecast([PAID_HOT, paid_warm, open_hot], 61 * DAY, 30 * DAY)
    assert (row.temperature, row.open_leads) == ("hot", 1)
    assert row.expected_payments > 0
    # The only first payment made hot was 50: hot leads are priced at it, not at the mean of
    # every first payment (275), as if the one paid hot had been paid warm.
    assert row.expected_revenue == row.expected_payments * 50
