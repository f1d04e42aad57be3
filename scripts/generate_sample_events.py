#!/usr/bin/env python3
"""Write deterministic sample events of readers, listeners and viewers as NDJSON.

``--format raw`` (the default) writes the rows the collector would have written, which
load into BigQuery with:

    bq load --source_format=NEWLINE_DELIMITED_JSON DATASET.book_media_events \\
        examples/sample_events.json schemas/book_media_events.json

``--format client`` writes what a tracker posts, for ``collector send``. Without
``--end-date`` the events end now (UTC), so they pass the collector's 30-day window.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.warehouse.samples import SampleConfig, generate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="NDJSON file to write")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--users", type=int, default=30, help="number of users (default 30)")
    parser.add_argument("--days", type=int, default=3, help="days of activity (default 3)")
    parser.add_argument(
        "--end-date",
        type=date.fromisoformat,
        help="last UTC day of activity, YYYY-MM-DD (default: up to now)",
    )
    parser.add_argument("--format", choices=["raw", "client"], default="raw", help="row format")
    args = parser.parse_args(argv)

    if args.end_date is not None:
        end = datetime.combine(args.end_date + timedelta(days=1), datetime.min.time(), UTC)
    else:
        end = datetime.now(UTC).replace(microsecond=0)
    try:
        config = SampleConfig(end=end, users=args.users, days=args.days, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    lines = generate(config, args.format)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(b"".join(line + b"\n" for line in lines))
    print(f"wrote {len(lines)} {args.format} events to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
