"""Service settings, read from ``COLLECTOR_*`` environment variables and a ``.env`` file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TOPIC_PATTERN = re.compile(
    r"^projects/[a-z][a-z0-9\-]{4,28}[a-z0-9]/topics/[A-Za-z][\w\-.~+%]{2,254}$"
)


class Settings(BaseSettings):
    """Every setting the collector reads; the environment variable is ``COLLECTOR_`` + name."""

    model_config = SettingsConfigDict(
        env_prefix="COLLECTOR_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    # Cloud Run sets PORT; COLLECTOR_PORT wins when both are set.
    port: int = Field(
        default=8080, ge=0, le=65535, validation_alias=AliasChoices("COLLECTOR_PORT", "PORT")
    )
    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    keys_file: Path | None = None

    sink: Literal["local", "pubsub"] = "local"
    # Local sink: files rotate when either bound is reached.
    local_rotate_seconds: float = Field(default=3600.0, gt=0)
    local_rotate_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    local_fsync: bool = True

    pubsub_topic: str | None = None
    pubsub_invalid_topic: str | None = None
    pubsub_batch_max_messages: int = Field(default=500, ge=1, le=1000)
    pubsub_batch_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=9 * 1024 * 1024)
    pubsub_batch_max_latency: float = Field(default=0.005, ge=0, le=1)
    pubsub_publish_timeout: float = Field(default=10.0, gt=0)

    # Delivery: a request waits at most this long for the sink's confirmation.
    sink_confirm_timeout: float = Field(default=5.0, gt=0)
    max_inflight_events: int = Field(default=50_000, ge=1)
    retry_after_seconds: int = Field(default=2, ge=1)

    # Seconds allowed for reading one request body; a slower client gets 408.
    body_read_timeout: float = Field(default=10.0, gt=0)
    # Seconds a connection may take to send a request's complete headers.
    header_read_timeout: float = Field(default=10.0, gt=0)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    # Open connections; a new one beyond this gets 503 with Retry-After and is closed.
    max_connections: int = Field(default=2000, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_decompressed_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_event_bytes: int = Field(default=32 * 1024, ge=256)
    max_events_per_request: int = Field(default=500, ge=1)
    max_future_seconds: float = Field(default=300.0, ge=0, le=86400)
    max_past_days: float = Field(default=30.0, gt=0, le=3650)

    rate_limit_storage: str = "memory://"
    rate_limit_fail_open: bool = True
    # Per client address, in events; shared NAT and proxies put many readers behind one.
    ip_rate_limit: str = "30000/minute"
    # Per API key, in events, for keys whose entry sets no rate_limit.
    key_rate_limit: str = "60000/minute"
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    ip_truncation: Literal["truncate", "full", "none"] = "truncate"
    privacy_signals_drop: bool = False
    cors_max_age: int = Field(default=7200, ge=0)
    # Freeze start-up objects and raise the first GC threshold (see docs/benchmarks.md).
    gc_tuning: bool = True

    # Warehouse runner on BigQuery (collector warehouse run --target bigquery).
    bigquery_project: str | None = None
    bigquery_location: str = "US"

    @field_validator("pubsub_topic", "pubsub_invalid_topic")
    @classmethod
    def _check_topic(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not TOPIC_PATTERN.match(value):
            raise ValueError("must look like projects/PROJECT_ID/topics/TOPIC_ID")
        return value or None

    @field_validator("rate_limit_storage")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://", "redis+sentinel://")):
            raise ValueError("must be memory:// or a redis:// URL")
        return value

    @field_validator("ip_rate_limit", "key_rate_limit")
    @classmethod
    def _check_limit(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError("must look like 30000/minute or 500/second") from None
        return value

    @model_validator(mode="after")
    def _check_sink(self) -> Settings:
        if self.sink == "pubsub" and not self.pubsub_topic:
            raise ValueError(
                "COLLECTOR_PUBSUB_TOPIC is required when COLLECTOR_SINK=pubsub "
                "(projects/PROJECT_ID/topics/TOPIC_ID)"
            )
        return self


class SettingsError(Exception):
    """A setting has an invalid value; the message names the environment variable."""


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning validation errors into one message per variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            if not name:
                variable = "settings"
            elif name.isupper():
                variable = name  # already an environment variable name (an alias)
            else:
                variable = f"COLLECTOR_{name.upper()}"
            message = error["msg"].removeprefix("Value error, ")
            shown = "" if name in _SECRET_FIELDS else f" (got {_short(error.get('input'))})"
            lines.append(f"{variable}: {message}{shown}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


# A Redis URL may carry a password, so its value never appears in error messages.
_SECRET_FIELDS = {"rate_limit_storage"}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
