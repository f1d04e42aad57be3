"""The development key that ``collector serve`` creates when no keys file is set."""

from __future__ import annotations

from pathlib import Path

from collector.keys import DEV_KEYS_FILE, KeyEntry, hash_key, new_key, write_entries
from collector.models import EVENT_NAMES


def ensure_dev_key(data_dir: Path) -> str | None:
    """Create ``<data_dir>/dev_keys.json`` with one key if it is missing.

    Returns the new key, to be shown once, or None when the file already exists. The key
    allows every origin and every event name, purchases included, so that local examples
    work; production keys come from a keys file made with ``collector keys create``.
    """
    path = Path(data_dir) / DEV_KEYS_FILE
    if path.exists():
        return None
    key = new_key("browser")
    entry = KeyEntry(
        id="dev",
        sha256=hash_key(key),
        kind="browser",
        origins=["*"],
        events=list(EVENT_NAMES),
    )
    write_entries(path, [entry])
    return key
