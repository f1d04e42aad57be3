"""API keys: stored as SHA-256 hashes, each with an id, a kind, origins and limits.

The keys file is a JSON list of entries such as::

    {"id": "web", "sha256": "<64 hex>", "kind": "browser",
     "origins": ["https://www.example.com", "https://*.example.com"],
     "rate_limit": "1200/minute", "events": null}

``events`` lists the event names the key may send; null allows every name except those
restricted to server keys (``purchase`` by default).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from collector.models import EVENT_NAMES

# Event names that browser keys may not send unless their entry lists them explicitly.
SERVER_ONLY_EVENTS = frozenset({"purchase"})
DEV_KEYS_FILE = "dev_keys.json"
KEY_PREFIX = {"browser": "pk_", "server": "sk_"}

_ORIGIN = re.compile(r"^https?://(\*\.)?[A-Za-z0-9.\-]+(:\d{1,5})?$")


class KeyEntry(BaseModel):
    """One API key as stored in the keys file; the key itself is never stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    kind: Literal["browser", "server"] = "browser"
    origins: list[str] = Field(default_factory=list)
    rate_limit: str | None = None
    events: list[str] | None = None

    @field_validator("origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        origins = [origin.rstrip("/") for origin in origins]
        for origin in origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(
                    f"origin {origin[:80]!r} must be scheme://host[:port], optionally "
                    "with a leading *. for subdomains, or *"
                )
        return [origin.lower() for origin in origins]

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str | None) -> str | None:
        if value is not None:
            from limits import parse

            try:
                parse(value)
            except ValueError:
                raise ValueError("rate_limit must look like 1200/minute") from None
        return value

    @field_validator("events")
    @classmethod
    def _check_events(cls, events: list[str] | None) -> list[str] | None:
        if events is not None:
            unknown = sorted(set(events) - set(EVENT_NAMES))
            if unknown:
                raise ValueError(f"unknown event names: {', '.join(unknown)}")
        return events

    def allows_event(self, event_name: str) -> bool:
        if self.events is not None:
            return event_name in self.events
        return self.kind == "server" or event_name not in SERVER_ONLY_EVENTS

    def allows_origin(self, origin: str | None) -> bool:
        """True when a request from ``origin`` may use this key.

        Server keys and requests without an Origin header (server to server) are not
        origin-checked; a browser key with no origins listed allows none.
        """
        if origin is None or self.kind == "server":
            return True
        return origin_matches(origin, self.origins)


_KEY_LIST = TypeAdapter(list[KeyEntry])


def origin_matches(origin: str, patterns: list[str]) -> bool:
    origin = origin.lower()
    for pattern in patterns:
        if pattern == "*" or pattern == origin:
            return True
        if "://*." in pattern:
            scheme, rest = pattern.split("://*.", 1)
            if origin.startswith(scheme + "://") and origin.endswith("." + rest):
                return True
    return False


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeysFileError(Exception):
    """The keys file is missing, unreadable or invalid."""


class KeyStore:
    """Look up keys by the SHA-256 of the presented value, comparing in constant time."""

    def __init__(self, entries: list[KeyEntry]) -> None:
        self.entries = entries
        self._by_hash = {entry.sha256: entry for entry in entries}
        ids = [entry.id for entry in entries]
        if len(set(ids)) != len(ids):
            raise KeysFileError("key ids must be unique")
        self.browser_origins = sorted(
            {origin for entry in entries if entry.kind == "browser" for origin in entry.origins}
        )
        # Each CORS request checks its Origin; most requests repeat a few origins.
        self.allows_preflight_origin = lru_cache(maxsize=4096)(self._allows_preflight_origin)

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise KeysFileError(f"cannot read keys file {path}: {exc.strerror}") from None
        try:
            return cls(_KEY_LIST.validate_json(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise KeysFileError(
                f"invalid keys file {path}: entry {where}: {first['msg']}"
            ) from None

    def authenticate(self, key: str) -> KeyEntry | None:
        digest = hash_key(key)
        entry = self._by_hash.get(digest)
        if entry is None:
            # Compare anyway so a miss costs about the same as a hit.
            hmac.compare_digest(digest, "0" * 64)
            return None
        return entry if hmac.compare_digest(digest, entry.sha256) else None

    def _allows_preflight_origin(self, origin: str) -> bool:
        return origin_matches(origin, self.browser_origins) or any(
            entry.kind == "server" and entry.origins and origin_matches(origin, entry.origins)
            for entry in self.entries
        )


def new_key(kind: str) -> str:
    return KEY_PREFIX.get(kind, "k_") + secrets.token_urlsafe(24)


def read_entries(path: Path) -> list[KeyEntry]:
    if not Path(path).exists():
        return []
    return KeyStore.load(path).entries


def write_entries(path: Path, entries: list[KeyEntry]) -> None:
    """Write the keys file atomically with owner-only permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    data = json.dumps([entry.model_dump() for entry in entries], indent=2) + "\n"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def add_key(
    path: Path,
    key_id: str,
    kind: str,
    origins: list[str],
    rate_limit: str | None = None,
    events: list[str] | None = None,
) -> str:
    """Create a key, append its entry to ``path`` and return the key (shown once)."""
    entries = read_entries(path)
    if any(entry.id == key_id for entry in entries):
        raise KeysFileError(f"a key with id {key_id!r} already exists in {path}")
    key = new_key(kind)
    entry = KeyEntry(
        id=key_id,
        sha256=hash_key(key),
        kind=kind,  # type: ignore[arg-type]
        origins=origins,
        rate_limit=rate_limit,
        events=events,
    )
    write_entries(path, [*entries, entry])
    return key
