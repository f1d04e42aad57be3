"""``collector report``: terminal tables and the self-contained HTML page with SVG charts."""

from __future__ import annotations

import re
import shutil
import subprocess
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from collector.cli import main
from collector.warehouse.report import ReportError, format_cell, read_marts, write_report

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "warehouse" / "events.ndjson"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class ElementCounter(HTMLParser):
    """Count start tags, with their classes, per <section id=...>."""

    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.counts: dict[tuple[str, str], int] = {}
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self.section = values.get("id") or ""
        name = f"{tag}.{values['class']}" if values.get("class") else tag
        self.counts[(self.section, name)] = self.counts.get((self.section, name), 0) + 1
        for attribute in ("src", "href"):
            if values.get(attribute):
                self.urls.append(values[attribute] or "")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report") / "data"
    (folder / "events").mkdir(parents=True)
    shutil.copy(FIXTURE, folder / "events" / "events-fixture.ndjson")
    assert main(["warehouse", "load", "--data-dir", str(folder)]) == 0
    assert main(["warehouse", "run", "--data-dir", str(folder), "--full-refresh"]) == 0
    return folder


@pytest.fixture(scope="module")
def report_html(data_dir: Path) -> str:
    output = data_dir / "report.html"
    write_report(data_dir / "warehouse.duckdb", output)
    return output.read_text(encoding="utf-8")


def count(html: str) -> dict[tuple[str, str], int]:
    parser = ElementCounter()
    parser.feed(html)
    return parser.counts


def test_report_has_a_chart_per_mart(report_html: str) -> None:
    counts = count(report_html)
    assert counts[("daily_active_users", "svg")] == 1
    # One line per platform: all, android, ios, unknown, web.
    assert counts[("daily_active_users", "polyline.series")] == 5
    # 4 + 4 + 3 + 3 platform-days, each a point.
    assert counts[("daily_active_users", "circle")] == 5 * 4
    assert counts[("content_completion", "svg")] == 1
    assert counts[("content_completion", "rect.bar")] == 4  # au-1, bk-1, bk-2, vd-1
    # One chart per currency, never a sum across currencies: EUR, GBP, JPY, USD.
    assert counts[("revenue_daily", "svg")] == 4
    assert counts[("revenue_daily", "rect.bar")] == 5  # the five revenue rows


def test_report_opens_offline(report_html: str) -> None:
    parser = ElementCounter()
    parser.feed(report_html)
    assert parser.urls == []
    assert "<script" not in report_html
    assert "default-src 'none'" in report_html
    # The only URL is the SVG namespace, which is a name, not a request.
    assert set(re.findall(r"https?://[^\s\"'<>]+", report_html)) == {"http://www.w3.org/2000/svg"}


def test_report_shows_exact_amounts(report_html: str) -> None:
    assert "<td>0.123456789</td>" in report_html
    assert "<td>19.75</td>" in report_html
    assert "<td>1500</td>" in report_html


def test_report_command_prints_tables(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = data_dir / "cli-report.html"
    assert main(["report", "--data-dir", str(data_dir), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert output.exists()
    assert "Daily active users" in printed
    assert "Completion by title" in printed
    assert "Revenue by day" in printed
    lines = printed.splitlines()
    assert "2026-03-03    USD       subscription       1  0.123456789" in lines
    assert "vd-1        video                2           1            50.0%" in lines
    assert lines[-1] == f"wrote {output}"


def test_report_without_marts_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--database", str(tmp_path / "none.duckdb")]) == 1
    assert "run `collector warehouse load` and `collector warehouse run`" in capsys.readouterr().err
    with pytest.raises(ReportError):
        read_marts(tmp_path / "none.duckdb")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("9.990000000"), "9.99"),
        (Decimal("17.900000000"), "17.90"),  # money keeps two decimals
        (Decimal("1500.000000000"), "1500"),
        (Decimal("0.123456789"), "0.123456789"),
        (0.5, "50.0%"),  # the only floats in the marts are rates
        (None, "-"),
        (3, "3"),
    ],
)
def test_format_cell(value: object, shown: str) -> None:
    assert format_cell(value) == shown


def test_report_renders_in_headless_chromium(data_dir: Path, report_html: str) -> None:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    profile = data_dir / "chromium-profile"
    completed = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--dump-dom",
            (data_dir / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    dom = completed.stdout
    # The DOM after parsing and layout contains the same charts as the file.
    rendered = count(dom)
    assert rendered[("daily_active_users", "svg")] == 1
    assert rendered[("content_completion", "rect.bar")] == 4
    assert rendered[("revenue_daily", "svg")] == 4
    assert "<title>Book media report</title>" in dom
