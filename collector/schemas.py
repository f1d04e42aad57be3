"""Generate ``schemas/``: the JSON Schema of a client event and the BigQuery raw table schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from collector.enrich import ROW_COLUMNS
from collector.models import EVENT_ADAPTER, Content, Context

JSON_SCHEMA_FILE = "event.schema.json"
BIGQUERY_SCHEMA_FILE = "book_media_events.json"

# Columns a BigQuery subscription with write_metadata fills in; null in rows from bq load.
METADATA_COLUMNS = [
    {
        "name": "subscription_name",
        "type": "STRING",
        "mode": "NULLABLE",
        "description": "Pub/Sub subscription that wrote the row.",
    },
    {
        "name": "message_id",
        "type": "STRING",
        "mode": "NULLABLE",
        "description": "Pub/Sub message id.",
    },
    {
        "name": "publish_time",
        "type": "TIMESTAMP",
        "mode": "NULLABLE",
        "description": "When Pub/Sub accepted the message.",
    },
    {
        "name": "attributes",
        "type": "JSON",
        "mode": "NULLABLE",
        "description": "Pub/Sub message attributes (event_name, schema_version).",
    },
]

_FIELD_TYPES: dict[str, tuple[str, str, str]] = {
    "event_id": ("STRING", "REQUIRED", "Client-made UUID; the deduplication key."),
    "event_name": ("STRING", "REQUIRED", "Event kind, such as page_turned or purchase."),
    "occurred_at": ("TIMESTAMP", "REQUIRED", "When the event happened, by the client clock."),
    "sent_at": ("TIMESTAMP", "NULLABLE", "When the client sent the batch, by the client clock."),
    "received_at": ("TIMESTAMP", "REQUIRED", "When the collector received it (server clock)."),
    "occurred_at_corrected": (
        "TIMESTAMP",
        "REQUIRED",
        "received_at - (sent_at - occurred_at) when sent_at is known, else occurred_at.",
    ),
    "user_id": ("STRING", "NULLABLE", "Logged-in user id."),
    "anonymous_id": ("STRING", "NULLABLE", "Device id from the tracker."),
    "session_id": ("STRING", "NULLABLE", "Session id; null only for purchases."),
    "properties": ("JSON", "NULLABLE", "Event-specific properties; amount as a decimal string."),
    "key_id": ("STRING", "REQUIRED", "Id of the API key used (never the key)."),
    "client_ip": ("STRING", "NULLABLE", "Client address, truncated to /24 or /48 by default."),
    "user_agent": ("STRING", "NULLABLE", "User-Agent request header."),
    "is_bot": ("BOOLEAN", "REQUIRED", "True for well-known crawlers and headless browsers."),
    "schema_version": ("STRING", "REQUIRED", "Version of the row format."),
}

_PYTHON_TO_BIGQUERY = {"string": "STRING", "number": "FLOAT64", "integer": "INT64"}


def _record_fields(model: Any) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    fields = []
    for name, spec in schema["properties"].items():
        options = spec.get("anyOf", [spec])
        kinds = [option.get("type") for option in options if option.get("type") != "null"]
        bigquery_type = _PYTHON_TO_BIGQUERY[kinds[0]]
        required = name in schema.get("required", [])
        fields.append(
            {"name": name, "type": bigquery_type, "mode": "REQUIRED" if required else "NULLABLE"}
        )
    return fields


def bigquery_schema() -> list[dict[str, Any]]:
    """Return the raw table schema in the JSON form that ``bq load`` and Terraform take."""
    columns = []
    for name in ROW_COLUMNS:
        if name == "content":
            columns.append(
                {
                    "name": name,
                    "type": "RECORD",
                    "mode": "NULLABLE",
                    "description": "The book, audiobook or video.",
                    "fields": _record_fields(Content),
                }
            )
        elif name == "context":
            columns.append(
                {
                    "name": name,
                    "type": "RECORD",
                    "mode": "NULLABLE",
                    "description": "Page and device context from the client.",
                    "fields": _record_fields(Context),
                }
            )
        else:
            bigquery_type, mode, description = _FIELD_TYPES[name]
            columns.append(
                {"name": name, "type": bigquery_type, "mode": mode, "description": description}
            )
    return columns + METADATA_COLUMNS


def event_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of one client event (the discriminated union on event_name)."""
    schema = EVENT_ADAPTER.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Book media client event",
        **schema,
    }


def render() -> dict[str, str]:
    return {
        JSON_SCHEMA_FILE: json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n",
        BIGQUERY_SCHEMA_FILE: json.dumps(bigquery_schema(), indent=2) + "\n",
    }


def write_schemas(folder: Path, check: bool = False) -> list[str]:
    """Write the generated files into ``folder``; return the names that changed.

    With ``check``, nothing is written and the names of differing files are returned.
    """
    folder = Path(folder)
    changed = []
    for name, text in render().items():
        path = folder / name
        current = path.read_text() if path.exists() else None
        if current != text:
            changed.append(name)
            if not check:
                folder.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return changed
