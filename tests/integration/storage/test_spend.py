"""Spend loading on the embedded engine (issue 12): Excel's UTF-8 BOM, a file that is not
UTF-8, channel names the rules never produce, and currencies that would be summed as one.
The library's answers first, then the command's (a subprocess owning its own store)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from funnel.channels import ChannelRules
from storage.backends import ChdbStore
from storage.spend import SpendFileError, load_spend

pytestmark = pytest.mark.integration

HEADER = "date,site_id,channel,campaign,cost,currency\n"


def write(path: Path, text: str) -> Path:
    path.write_text(HEADER + text, encoding="utf-8")
    return path


def stored(store: ChdbStore) -> list[tuple[str, str, str, Decimal]]:
    rows = store.query(
        f"SELECT site_id, channel, currency, cost FROM {store.database}.spend FINAL "
        "ORDER BY site_id, channel"
    )
    return [
        (str(r["site_id"]), str(r["channel"]), str(r["currency"]), Decimal(str(r["cost"])))
        for r in rows
    ]


def test_an_excel_csv_with_a_byte_order_mark_loads(store: ChdbStore, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "2026-10-01,s,Email,,12.5,USD\r\n").encode())
    result = load_spend(store, path)
    assert result.rejected == []
    assert result.loaded == 1
    assert stored(store) == [("s", "Email", "USD", Decimal("12.5"))]


def test_a_file_that_is_not_utf8_is_refused_whole(store: ChdbStore, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        (HEADER + "2026-10-01,s,Email,,1,USD\n").encode()
        + "2026-10-02,s,Email,caf\xe9,2,USD\n".encode("latin-1")
    )
    with pytest.raises(SpendFileError) as caught:
        load_spend(store, path)
    assert caught.value.reason == "not_utf8"
    assert "line 3" in caught.value.detail
    assert stored(store) == []  # line 2 was good, but the file is refused as a whole


def test_unknown_channels_load_with_a_warning(store: ChdbStore, tmp_path: Path) -> None:
    path = write(
        tmp_path / "spend.csv",
        "2026-10-01,s,Paid Search,brand,10,USD\n"
        "2026-10-01,s,Facebok Ads,x,5,USD\n"
        "2026-10-01,s,Direct,,0,USD\n"
        "2026-10-01,s,Other,,1,USD\n"
        "2026-10-02,s,Facebok Ads,y,5,USD\n",
    )
    result = load_spend(store, path)
    assert result.loaded == 5
    assert result.unknown_channels == ["Facebok Ads"]
    [warning] = result.warnings
    assert "Facebok Ads" in warning
    for known in ("Paid Search", "Email", "Direct", "Other"):
        assert known in warning
    assert ("s", "Facebok Ads", "USD", Decimal("5")) in stored(store)  # loaded all the same


def test_the_known_channels_are_those_of_the_configured_rules(
    store: ChdbStore, tmp_path: Path
) -> None:
    rules = ChannelRules.model_validate(
        {"direct": "Typed In", "rule": [{"channel": "Partners", "mediums": ["partner"]}]}
    )
    path = write(
        tmp_path / "spend.csv", "2026-10-01,s,Partners,,3,USD\n2026-10-01,s,Email,,1,USD\n"
    )
    result = load_spend(store, path, channels=rules)
    assert result.loaded == 2
    assert result.unknown_channels == ["Email"]
    assert "known: Direct, Partners, Typed In" in result.warnings[0]


def test_a_site_mixing_currencies_in_one_file_is_refused(store: ChdbStore, tmp_path: Path) -> None:
    path = write(
        tmp_path / "spend.csv",
        "2026-10-01,s,Email,,1,USD\n"
        "2026-10-01,s,Display,,2,EUR\n"
        "2026-10-01,t,Email,,3,GBP\n",  # another site in another currency is fine
    )
    with pytest.raises(SpendFileError) as caught:
        load_spend(store, path)
    assert caught.value.reason == "currency_mix"
    assert "EUR, USD" in caught.value.detail
    assert "GBP" not in caught.value.detail
    assert stored(store) == []


def test_a_currency_other_than_the_stored_one_is_refused(store: ChdbStore, tmp_path: Path) -> None:
    assert load_spend(store, write(tmp_path / "usd.csv", "2026-10-01,s,Email,,1,USD\n")).loaded
    eur = write(tmp_path / "eur.csv", "2026-10-02,s,Email,,2,EUR\n2026-10-02,t,Email,,2,EUR\n")
    with pytest.raises(SpendFileError) as caught:
        load_spend(store, eur)
    assert caught.value.reason == "currency_mix"
    assert caught.value.detail == "site 's' has rows in EUR but its stored spend is in USD"
    assert stored(store) == [("s", "Email", "USD", Decimal("1"))]  # nothing of eur.csv landed
    # the same currency loads; so does the other site alone
    assert load_spend(store, write(tmp_path / "more.csv", "2026-10-02,s,Email,,2,USD\n")).loaded
    assert load_spend(store, write(tmp_path / "t.csv", "2026-10-02,t,Email,,2,EUR\n")).loaded


def funnel_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("funnel")), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_reports_file_errors_in_one_line_and_warns(tmp_path: Path) -> None:
    store = f"chdb://{tmp_path / 'store'}"
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes((HEADER + "2026-10-01,s,Email,caf\xe9,1,USD\n").encode("latin-1"))
    bad = funnel_cli("spend", "load", str(latin1), "--store", store)
    assert bad.returncode == 2, bad.stderr
    assert "Traceback" not in bad.stderr
    [line] = [x for x in bad.stderr.splitlines() if "not UTF-8" in x]
    assert line.startswith("Error: spend file is not UTF-8 text: line 2")

    mixed = write(tmp_path / "mixed.csv", "2026-10-01,s,Email,,1,USD\n2026-10-01,s,Email,x,1,EUR\n")
    refused = funnel_cli("spend", "load", str(mixed), "--store", store)
    assert refused.returncode == 2, refused.stderr
    assert "EUR, USD" in refused.stderr
    assert "Traceback" not in refused.stderr

    odd = tmp_path / "odd.csv"
    odd.write_text(HEADER + "2026-10-01,s,Facebok Ads,,1,USD\n", encoding="utf-8-sig")
    warned = funnel_cli("spend", "load", str(odd), "--store", store)
    assert warned.returncode == 0, warned.stderr
    assert "Facebok Ads" in warned.stderr
    assert "loaded 1 spend row(s)" in warned.stderr
