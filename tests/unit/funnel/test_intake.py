"""Intake of one batch: validation, site check, enrichment, clock correction."""

import ipaddress
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given
from hypothesis import strategies as st

from funnel.enrichment import anonymise_ip, correct_clock, parse_user_agent
from funnel.intake import IntakeLimits, take_batch

NOW = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def item(**fields: object) -> dict[str, object]:
    return {
        "event_id": "3f2c1e6a-8a4b-4c1d-9d3e-2b1a0c9f8e7d",
        "type": "click",
        "anonymous_id": "a1",
        "occurred_at": "2026-10-01T11:59:00Z",
        **fields,
    }


def test_mixed_batch_keeps_valid_items_and_names_each_invalid_field() -> None:
    result = take_batch(
        [item(), item(type="nope"), 42, item(site_id="other"), item(seq=-1, currency="x")],
        site_id="shop",
        received_at=NOW,
    )
    assert len(result.accepted) == 1
    assert result.accepted[0].site_id == "shop"
    by_index = {r.index: r for r in result.rejected}
    assert sorted(by_index) == [1, 2, 3, 4]
    assert by_index[1].errors[0]["field"] == "type"
    assert by_index[2].reason == "type"
    assert by_index[3].reason == "site_mismatch"
    assert {e["field"] for e in by_index[4].errors} >= {"seq", "currency"}
    assert all(r.payload and r.site_id == "shop" for r in result.rejected)


def test_server_fields_are_set_by_the_server_not_the_sender() -> None:
    spoofed = item(context={"is_bot": False, "ip": "1.2.3.4", "utm_source": "x"})
    result = take_batch(
        [spoofed],
        site_id="shop",
        received_at=NOW,
        ip="203.0.113.77",
        user_agent="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    )
    [event] = result.accepted
    assert event.context.ip == "203.0.113.0"
    assert event.context.is_bot is True
    assert event.context.utm_source == "x"
    assert event.received_at == NOW


def test_clock_skew_is_corrected_from_sent_at() -> None:
    # The sender's clock runs 1 hour fast: it says it sent at 13:00 what arrived at 12:00.
    result = take_batch(
        [item(occurred_at="2026-10-01T12:59:00Z", sent_at="2026-10-01T13:00:00Z")],
        site_id="shop",
        received_at=NOW,
    )
    [event] = result.accepted
    assert event.occurred_at == datetime(2026, 10, 1, 11, 59, tzinfo=UTC)
    assert event.context.clock_skew_ms == 3_600_000


def test_future_events_are_clamped_and_flagged() -> None:
    result = take_batch(
        [item(occurred_at="2026-10-02T12:00:00Z")],
        site_id="shop",
        received_at=NOW,
        limits=IntakeLimits(future_bound=timedelta(minutes=10)),
    )
    [event] = result.accepted
    assert event.occurred_at == NOW
    assert event.context.clamped is True


def test_correct_clock_keeps_a_sane_event() -> None:
    fixed = correct_clock(NOW, None, NOW, timedelta(minutes=10))
    assert (fixed.occurred_at, fixed.skew_ms, fixed.clamped) == (NOW, None, False)


def test_ip_anonymisation() -> None:
    assert anonymise_ip("192.168.10.77") == "192.168.10.0"
    assert anonymise_ip("2001:db8:abcd:12:1:2:3:4") == "2001:db8:abcd::"
    assert anonymise_ip("not an ip") == ""
    assert anonymise_ip(None) == ""
    assert anonymise_ip(" 10.1.2.3 ") == "10.1.2.0"


@given(st.ip_addresses())
def test_ip_anonymisation_keeps_the_network_part(address: IPv4Address | IPv6Address) -> None:
    """The /24 (IPv4) or /48 (IPv6) network of any address, written as ``ipaddress`` does."""
    prefix = 24 if address.version == 4 else 48
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    assert anonymise_ip(str(address)) == str(network.network_address)


def test_user_agents() -> None:
    chrome = parse_user_agent(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/130.0.0.0 Safari/537.36"
    )
    assert (chrome.browser, chrome.os, chrome.is_bot) == ("Chrome", "Windows", False)
    headless = parse_user_agent(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/130.0.0.0 Safari/537.36"
    )
    assert headless.is_bot is True
    assert parse_user_agent("curl/8.5.0").is_bot is True
    assert parse_user_agent(None).is_bot is False
