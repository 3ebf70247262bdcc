"""The tracker in a real browser: headless Chromium → /t.js → collector → the store (chDB).

The page and the collector are on different origins (127.0.0.1 and localhost), as a shop and
its analytics endpoint would be, so CORS is exercised for real.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from storage.backends import ChdbStore
from stream_processors.embedded import EmbeddedPipeline
from tests.servers import free_port, serve_asgi, serve_directory

PAGE = Path(__file__).with_name("tracker_page.html")
KEY = "browser-key"


DESKTOP_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize("user_agent", [DESKTOP_CHROME, None], ids=["person", "headless"])
def test_tracked_visit_lands_in_the_store(
    browser: Browser, store: ChdbStore, user_agent: str | None
) -> None:
    """A visit as a person's browser presents itself, and as headless Chromium (flagged as
    a bot: stored, but the stream derives nothing from it)."""
    with tempfile.TemporaryDirectory() as site_dir:
        page_port = free_port()
        page_origin = f"http://127.0.0.1:{page_port}"
        settings = CollectorSettings(
            write_keys={KEY: "browser-shop"},  # type: ignore[dict-item]
            cors_origins=(page_origin,),
        )
        delivery = EmbeddedDelivery(EmbeddedPipeline(store, CoreConfig.default()))
        collector_port = free_port()
        with serve_asgi(create_app(settings, delivery), collector_port):
            endpoint = f"http://localhost:{collector_port}"
            html = (
                PAGE.read_text("utf-8")
                .replace("{{KEY}}", KEY)
                .replace("{{SITE}}", "browser-shop")
                .replace("{{ENDPOINT}}", endpoint)
            )
            Path(site_dir, "index.html").write_text(html, "utf-8")
            with serve_directory(Path(site_dir), port=page_port) as origin:
                assert origin == page_origin
                page = browser.new_page(user_agent=user_agent)
                page.goto(
                    f"{origin}/index.html?utm_source=google&utm_medium=cpc"
                    "&utm_campaign=brand_search&gclid=TeSt123"
                )
                page.wait_for_function("!!(window.funnel && window.funnel.track)")
                page.click("#buy")
                page.click("#signup")
                assert page.evaluate("window.funnel.flush()") is True
                page.close()

    rows = store.query(
        f"SELECT event_type, anonymous_id, customer_id, seq, channel, campaign, source, "
        f"is_bot, lead_intent FROM {store.database}.events "
        "WHERE site_id = 'browser-shop' ORDER BY seq"
    )
    assert [r["event_type"] for r in rows] == ["impression", "click", "lead"]
    assert all(r["channel"] == "Paid Search" for r in rows)
    assert all(r["campaign"] == "brand_search" for r in rows)
    assert all(r["source"] == "google" for r in rows)
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    assert len({r["anonymous_id"] for r in rows}) == 1  # one device...
    assert rows[2]["customer_id"] == "cust-42"  # ...linked to the customer at the lead
    assert rows[2]["lead_intent"] == "purchase"
    bot = user_agent is None
    assert all(r["is_bot"] == bot for r in rows)  # headless Chromium is flagged, not dropped
    # The lead identified the visitor: the device's stages moved to the customer's person.
    stages = store.query(
        f"SELECT person_id, step FROM {store.database}.stage_reached "
        "WHERE site_id = 'browser-shop' AND funnel = 'sales' "
        "GROUP BY person_id, step, step_index HAVING sum(sign) > 0 ORDER BY step_index"
    )
    expected = [("cust-42", "impression"), ("cust-42", "click"), ("cust-42", "lead")]
    assert [(s["person_id"], s["step"]) for s in stages] == ([] if bot else expected)
