"""The GoogleSQL files under ``bigquery/``: discovery, parsing and transpiling to DuckDB.

Each file creates one object (``raw``, then ``staging``, then ``marts``) and may use the query
parameter ``@window_start``. For DuckDB, sqlglot transpiles every statement and three
BigQuery-only details are rewritten first, each a storage hint or a type that DuckDB spells
differently:

- ``PARTITION BY``, ``CLUSTER BY`` and ``OPTIONS(...)`` are dropped: DuckDB has no
  equivalent, and they do not change query results.
- ``NUMERIC`` without precision becomes ``DECIMAL(38, 9)``, which is what BigQuery's NUMERIC
  is. sqlglot writes a bare ``DECIMAL``, which DuckDB reads as ``DECIMAL(18, 3)`` and which
  would round amounts to three decimals.
- ``NOT NULL`` inside ``STRUCT<...>`` field types is dropped, because DuckDB struct fields
  cannot carry constraints. The nested modes still hold on BigQuery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp

STAGES = ("raw", "staging", "marts")

# NOTE: the SQL lives beside the package in the repository, not inside it. This default
# works for a source checkout or an editable install; other installs must pass sql_dir.
DEFAULT_SQL_DIR = Path(__file__).resolve().parents[2] / "bigquery"

_STORAGE_HINTS = (exp.PartitionedByProperty, exp.ClusterProperty, exp.Property)


class SqlFileError(Exception):
    """A SQL file is missing, does not parse, or does not create exactly one object."""


@dataclass(frozen=True)
class Statement:
    """One statement of a file, as DuckDB SQL, with the query parameters it uses."""

    duckdb_sql: str
    parameters: tuple[str, ...]


@dataclass(frozen=True)
class SqlFile:
    """One GoogleSQL file: its stage, the table it creates and its statements."""

    path: Path
    stage: str
    target: str
    text: str
    statements: tuple[exp.Expression, ...]

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the query parameters (``@name``) used anywhere in the file."""
        names: set[str] = set()
        for statement in self.statements:
            names.update(_parameter_names(statement))
        return tuple(sorted(names))

    def duckdb_statements(self) -> list[Statement]:
        """Return each statement transpiled for DuckDB; parameters become ``$name``."""
        result = []
        for statement in self.statements:
            rewritten = rewrite_for_duckdb(statement)
            sql = rewritten.sql(dialect="duckdb", comments=False)
            result.append(Statement(sql, tuple(sorted(_parameter_names(statement)))))
        return result


def discover(sql_dir: Path | None = None) -> list[SqlFile]:
    """Return every ``*.sql`` file in stage order, and by file name within a stage."""
    root = Path(sql_dir) if sql_dir is not None else DEFAULT_SQL_DIR
    if not root.is_dir():
        raise SqlFileError(f"SQL folder {root} not found; pass --sql-dir with the bigquery/ folder")
    files = []
    for stage in STAGES:
        for path in sorted((root / stage).glob("*.sql")):
            files.append(parse_file(path, stage))
    if not files:
        raise SqlFileError(f"no SQL files under {root}/{{{','.join(STAGES)}}}")
    return files


def parse_file(path: Path, stage: str) -> SqlFile:
    """Parse one file as GoogleSQL and find the table it creates."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        parsed = sqlglot.parse(text, read="bigquery")
    except sqlglot.errors.SqlglotError as exc:
        raise SqlFileError(f"{path}: not valid GoogleSQL: {exc}") from exc
    statements = tuple(s for s in parsed if isinstance(s, exp.Expression))
    creates = [s for s in statements if isinstance(s, exp.Create) and s.kind == "TABLE"]
    if len(creates) != 1:
        raise SqlFileError(f"{path}: expected one CREATE TABLE statement, found {len(creates)}")
    table = creates[0].find(exp.Table)
    if table is None or not table.db:
        raise SqlFileError(f"{path}: the created table must be named as dataset.table")
    return SqlFile(Path(path), stage, f"{table.db}.{table.name}", text, statements)


def rewrite_for_duckdb(statement: exp.Expression) -> exp.Expression:
    """Return a copy of ``statement`` without the BigQuery-only details listed above."""
    tree = statement.copy()
    for node in list(tree.find_all(*_STORAGE_HINTS)):
        node.pop()
    for properties in list(tree.find_all(exp.Properties)):
        if not properties.expressions:
            properties.pop()
    for data_type in tree.find_all(exp.DataType):
        if data_type.this == exp.DataType.Type.DECIMAL and not data_type.expressions:
            data_type.replace(exp.DataType.build("DECIMAL(38, 9)", dialect="duckdb"))
        elif data_type.this == exp.DataType.Type.STRUCT:
            for field in data_type.expressions:
                for constraint in list(field.args.get("constraints") or []):
                    if isinstance(constraint.kind, exp.NotNullColumnConstraint):
                        constraint.pop()
    return tree


def _parameter_names(statement: exp.Expression) -> set[str]:
    return {node.name for node in statement.find_all(exp.Parameter)}
