"""The live page of ``funnel serve`` in headless Chromium, against a real server and store.

``funnel serve`` runs as a subprocess on a fresh chDB store; simulated traffic goes to its
collector over HTTP. The page must show what the report API answers for the same data — the
funnel bars, the channel table under the model chosen in the switcher — and follow new
events without a reload. A screenshot is saved to ``tests/e2e/artifacts/live_page.png``.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, Page

from producers.messiness import Mess, arrivals
from producers.replay import send_http
from producers.simulator import simulate
from tests.funnel_serve import Served, funnel_serve, split_people, wait_until

KEY = "live-key"
ARTIFACTS = Path(__file__).with_name("artifacts")


def funnel_on_page(page: Page) -> list[dict[str, float | str]]:
    result = page.eval_on_selector_all(
        "#funnel .step",
        """rows => rows.map(r => ({step: r.dataset.step, count: Number(r.dataset.count),
            step_conversion: r.dataset.stepConversion === ""
                ? null : Number(r.dataset.stepConversion),
            dropped_from_previous: Number(r.dataset.droppedFromPrevious)}))""",
    )
    assert isinstance(result, list)
    return result


def channels_on_page(page: Page) -> dict[str, tuple[float, float]]:
    rows = page.eval_on_selector_all(
        "#channels tbody tr",
        "rows => rows.map(r => [r.dataset.channel, Number(r.dataset.conversions),"
        " Number(r.dataset.revenue)])",
    )
    return {str(c): (float(n), float(r)) for c, n, r in rows}


def api_funnel(served: Served) -> list[dict[str, object]]:
    report = served.get("/api/reports/funnel")
    assert isinstance(report, dict)
    return [
        {k: step[k] for k in ("step", "count", "step_conversion", "dropped_from_previous")}
        for step in report["steps"]
    ]


def api_channels(served: Served, model: str) -> dict[str, tuple[float, float]]:
    table = served.get("/api/reports/attribution")
    assert isinstance(table, dict)
    assert model in table["models"]
    return {r["channel"]: (r[model], r[f"{model}_revenue"]) for r in table["rows"]}


def models(served: Served) -> list[str]:
    table = served.get("/api/reports/attribution")
    assert isinstance(table, dict)
    return list(table["models"])


def shown_version(page: Page, served: Served) -> None:
    """Wait until the page shows the reports of the store's latest commit."""
    version = served.live()["version"]
    page.wait_for_function(
        "v => Number(document.getElementById('funnel').dataset.version) === v"
        " && Number(document.getElementById('channels').dataset.version) === v",
        arg=version,
        timeout=30_000,
    )


def test_live_page_shows_the_report_api_and_follows_new_events(
    browser: Browser, tmp_path: Path
) -> None:
    sim = simulate(400, seed=3, site_id="shop")
    first, rest = split_people(arrivals(sim.events, Mess(), seed=3), 0.6)
    with funnel_serve(tmp_path / "store", f"{KEY}:shop", tmp_path / "serve.log") as served:
        assert send_http(first, served.url, KEY, size=100).accepted == len(first)
        wait_until(lambda: served.live()["stored_events"] == len(first), what="first commit")

        page = browser.new_page(viewport={"width": 1400, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"{r.url} failed"))
        # Without a key the page is a login form (401); the read key opens it (a cookie).
        answer = page.goto(served.url + "/")
        assert answer is not None
        assert answer.status == 401
        assert page.locator("#funnel").count() == 0
        page.fill("input[name=key]", "not the key")
        page.click("button[type=submit]")
        assert "That key is not valid." in page.content()
        page.fill("input[name=key]", served.read_key)
        page.click("button[type=submit]")
        page.wait_for_url(served.url + "/")
        shown_version(page, served)

        # The funnel bars are the funnel report's numbers.
        expected = api_funnel(served)
        assert expected[0]["count"] == len({a.payload["anonymous_id"] for a in first})
        assert funnel_on_page(page) == expected
        accepted = page.get_attribute("#accepted", "data-accepted")
        assert accepted == str(len(first))

        # The channel table is the attribution report under the chosen model.
        assert page.input_value("#model-select") == "last_non_direct"
        assert channels_on_page(page) == api_channels(served, "last_non_direct")
        default = api_channels(served, "last_non_direct")
        offered = page.eval_on_selector_all("#model-select option", "os => os.map(o => o.value)")
        assert offered == models(served)
        # A model that credits differently on this data, so the switch must show.
        other = next(m for m in models(served) if api_channels(served, m) != default)
        page.select_option("#model-select", other)
        page.wait_for_function(
            "m => document.getElementById('channels').dataset.model === m", arg=other
        )
        assert channels_on_page(page) == api_channels(served, other)

        # New events: the page follows them without a reload.
        page.evaluate("window.loadedOnce = true")
        assert send_http(rest, served.url, KEY, size=100).accepted == len(rest)
        wait_until(lambda: served.live()["stored_events"] == len(sim.events), what="second commit")
        expected = api_funnel(served)
        assert expected[0]["count"] == 400
        page.wait_for_function(
            "n => Number(document.querySelector('#funnel .step').dataset.count) === n",
            arg=400,
            timeout=30_000,
        )
        shown_version(page, served)
        assert page.evaluate("window.loadedOnce") is True  # the same document: no reload
        assert funnel_on_page(page) == expected
        assert channels_on_page(page) == api_channels(served, other)
        assert page.get_attribute("#accepted", "data-accepted") == str(len(sim.events))
        assert float(page.get_attribute("#rate", "data-rate") or 0) > 0
        assert not errors, errors

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "live_page.png"), full_page=True)
        page.close()
