"""Settings validation at start-up, and the generated schema files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.schemas import BIGQUERY_SCHEMA_FILE, JSON_SCHEMA_FILE, render
from collector.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COLLECTOR_PORT", "eighty"),
        ("COLLECTOR_SINK", "kafka"),
        ("COLLECTOR_MAX_BODY_BYTES", "-1"),
        ("COLLECTOR_PUBSUB_TOPIC", "my-topic"),
        ("COLLECTOR_IP_TRUNCATION", "half"),
    ],
)
def test_bad_setting_names_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert variable in str(caught.value)


def test_pubsub_sink_needs_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_SINK", "pubsub")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "COLLECTOR_PUBSUB_TOPIC" in str(caught.value)


def test_redis_password_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_RATE_LIMIT_STORAGE", "mysql://user:hunter2@db")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)
    assert "COLLECTOR_RATE_LIMIT_STORAGE" in str(caught.value)


def test_serve_exits_on_bad_setting(tmp_path: Path) -> None:
    env = {**os.environ, "COLLECTOR_PORT": "eighty", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "collector.cli", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "COLLECTOR_PORT" in result.stderr


def test_committed_schemas_match_models() -> None:
    for name, text in render().items():
        committed = (ROOT / "schemas" / name).read_text()
        assert committed == text, f"schemas/{name} is stale: run `collector schemas`"


def test_bigquery_schema_columns() -> None:
    import json

    columns = json.loads(render()[BIGQUERY_SCHEMA_FILE])
    names = [column["name"] for column in columns]
    assert names[:2] == ["event_id", "event_name"]
    assert {"subscription_name", "message_id", "publish_time", "attributes"} <= set(names)
    content = next(column for column in columns if column["name"] == "content")
    assert content["type"] == "RECORD"
    assert {field["name"] for field in content["fields"]} >= {"content_id", "content_type"}
    assert json.loads(render()[JSON_SCHEMA_FILE])["discriminator"]["propertyName"] == "event_name"


def test_serve_exits_on_missing_keys_file(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "COLLECTOR_KEYS_FILE": str(tmp_path / "missing.json"),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "collector.cli", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "missing.json" in result.stderr
