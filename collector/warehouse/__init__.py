"""The warehouse side: load local NDJSON into DuckDB, run the BigQuery SQL, report the marts.

The SQL under ``bigquery/`` is GoogleSQL. It runs unchanged on BigQuery and, transpiled by
sqlglot, on a local DuckDB file, so the laptop path and the cloud path build the same tables.
"""
