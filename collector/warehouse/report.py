"""``collector report``: the marts as terminal tables and as a self-contained HTML page.

The page has inline SVG charts and a Content-Security-Policy that allows no scripts and
no external requests, so it opens offline and shows the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

import duckdb

from collector.warehouse.charts import PALETTE, bar_chart, column_chart, line_chart
from collector.warehouse.runner import connect_duckdb

MART_QUERIES = {
    "daily_active_users": (
        "SELECT activity_date, platform, active_users FROM marts.daily_active_users "
        "ORDER BY activity_date, platform = 'all' DESC, platform"
    ),
    "content_completion": (
        "SELECT content_id, content_type, starters, completers, completion_rate "
        "FROM marts.content_completion ORDER BY content_type, content_id"
    ),
    "revenue_daily": (
        "SELECT revenue_date, currency, product_type, orders, revenue FROM marts.revenue_daily "
        "ORDER BY revenue_date, currency, product_type"
    ),
}
TITLES = {
    "daily_active_users": "Daily active users",
    "content_completion": "Completion by title",
    "revenue_daily": "Revenue by day",
}


class ReportError(Exception):
    """The marts cannot be read, for example because the pipeline has not run yet."""


@dataclass(frozen=True)
class Table:
    """One mart's rows with its column names."""

    name: str
    columns: list[str]
    rows: list[tuple[Any, ...]]


def read_marts(database: Path) -> dict[str, Table]:
    """Read every mart from the DuckDB file at ``database``."""
    if not Path(database).exists():
        raise ReportError(
            f"{database} not found; run `collector warehouse load` and `collector warehouse run`"
        )
    connection = connect_duckdb(database)
    try:
        tables = {}
        for name, query in MART_QUERIES.items():
            try:
                cursor = connection.execute(query)
            except duckdb.CatalogException:
                raise ReportError(
                    f"marts.{name} not found in {database}; run `collector warehouse run` first"
                ) from None
            columns = [column[0] for column in cursor.description]
            tables[name] = Table(name, columns, cursor.fetchall())
        return tables
    finally:
        connection.close()


def format_cell(value: Any) -> str:
    """Return a value as the report shows it: rates as percentages, amounts exact."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, Decimal):
        # NUMERIC keeps nine decimals: show 9.990000000 as 9.99, 17.900000000 as 17.90 and
        # 1500.000000000 as 1500, but never drop a significant digit.
        text = format(value.normalize(), "f")
        whole, _, fraction = text.partition(".")
        return f"{whole}.{fraction:0<2}" if fraction else whole
    return str(value)


def terminal_table(table: Table) -> str:
    """Return ``table`` as aligned plain-text columns with a title line."""
    cells = [[format_cell(value) for value in row] for row in table.rows]
    widths = [len(column) for column in table.columns]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [TITLES[table.name], ""]
    lines.append("  ".join(c.ljust(w) for c, w in zip(table.columns, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * width for width in widths))
    for row in cells:
        lines.append(
            "  ".join(_align(cell, width) for cell, width in zip(row, widths, strict=True))
        )
    if not cells:
        lines.append("(no rows)")
    return "\n".join(line.rstrip() for line in lines)


def _align(cell: str, width: int) -> str:
    numeric = cell.replace(".", "", 1).replace("%", "").replace("-", "", 1).isdigit()
    return cell.rjust(width) if numeric else cell.ljust(width)


def render_html(tables: dict[str, Table], generated_at: datetime | None = None) -> str:
    """Return the whole report page."""
    generated = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        _section("daily_active_users", [_active_users_chart(tables["daily_active_users"])], tables),
        _section("content_completion", [_completion_chart(tables["content_completion"])], tables),
        _section("revenue_daily", _revenue_charts(tables["revenue_daily"]), tables),
    ]
    return _PAGE.format(generated=escape(generated), sections="\n".join(sections))


def write_report(database: Path, output: Path) -> dict[str, Table]:
    """Read the marts from ``database`` and write the HTML page to ``output``."""
    tables = read_marts(database)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_html(tables), encoding="utf-8")
    return tables


def _section(name: str, charts: list[str], tables: dict[str, Table]) -> str:
    table = tables[name]
    head = "".join(f"<th>{escape(column)}</th>" for column in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(format_cell(value))}</td>" for value in row) + "</tr>"
        for row in table.rows
    )
    if not table.rows:
        body = f'<tr><td colspan="{len(table.columns)}">no rows</td></tr>'
    return (
        f'<section id="{name}"><h2>{escape(TITLES[name])}</h2>'
        + "".join(f'<figure class="chart">{chart}</figure>' for chart in charts)
        + f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def _active_users_chart(table: Table) -> str:
    dates = sorted({_day(row[0]) for row in table.rows})
    platforms = sorted({row[1] for row in table.rows}, key=lambda name: (name != "all", name))
    counts = {(_day(row[0]), row[1]): float(row[2]) for row in table.rows}
    series = {name: [counts.get((day, name), 0.0) for day in dates] for name in platforms}
    return line_chart("Active users per day", dates, series, lambda value: f"{value:g}")


def _completion_chart(table: Table) -> str:
    items = [(f"{row[0]} ({row[1]})", float(row[4])) for row in table.rows]
    return bar_chart("Completion rate", items, 1.0, lambda value: f"{value:.0%}")


def _revenue_charts(table: Table) -> list[str]:
    """Return one chart per currency: amounts in different currencies are never added."""
    charts = []
    dates = sorted({_day(row[0]) for row in table.rows})
    all_products = sorted({row[2] for row in table.rows})
    colors = {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(all_products)}
    for currency in sorted({row[1] for row in table.rows}):
        rows = [row for row in table.rows if row[1] == currency]
        products = sorted({row[2] for row in rows})
        amounts = {(_day(row[0]), row[2]): float(row[4]) for row in rows}
        series = {name: [amounts.get((day, name), 0.0) for day in dates] for name in products}
        charts.append(
            column_chart(
                f"Revenue per day in {currency}", dates, series, lambda v: f"{v:,.2f}", colors
            )
        )
    if not charts:
        charts.append(column_chart("Revenue per day", [], {}))
    return charts


def _day(value: date | str) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Book media report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 780px; color: #111827; }}
h1 {{ font-size: 1.5rem; margin-bottom: 0; }}
p.generated {{ color: #6b7280; margin-top: 0.25rem; }}
h2 {{ font-size: 1.15rem; margin-top: 2.5rem; border-bottom: 1px solid #e5e7eb; }}
figure.chart {{ margin: 1rem 0; }}
svg {{ max-width: 100%; height: auto; font-size: 12px; }}
svg .title {{ font-weight: 600; font-size: 13px; }}
svg .grid {{ stroke: #e5e7eb; }}
svg .tick, svg .legend, svg .label, svg .value {{ fill: #374151; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #e5e7eb; padding: 0.3rem 0.5rem; text-align: left; }}
</style>
</head>
<body>
<h1>Book media report</h1>
<p class="generated">Generated {generated} from the warehouse marts.</p>
{sections}
</body>
</html>
"""
