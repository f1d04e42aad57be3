"""Static checks of the tracker files: size, and the same public API in every entry point."""

from __future__ import annotations

import gzip
import re

from tests.browser.servers import ROOT

SDK = ROOT / "sdk"
MAX_GZIPPED_BYTES = 5 * 1024


def api_names() -> set[str]:
    """Return the keys of the object that tracker.js assigns to BookMediaTracker."""
    source = (SDK / "tracker.js").read_text()
    body = source[source.index("const api = {") : source.index("root.BookMediaTracker = api")]
    return set(re.findall(r"^    (\w+)[,:]", body, flags=re.MULTILINE))


def test_tracker_gzipped_under_5_kib() -> None:
    size = len(gzip.compress((SDK / "tracker.js").read_bytes(), compresslevel=9))

    assert size < MAX_GZIPPED_BYTES, f"tracker.js is {size} bytes gzipped"


def test_module_exports_every_function() -> None:
    module = (SDK / "tracker.mjs").read_text()
    block = module[module.index("export const {") : module.index("} = tracker;")]
    exported = set(re.findall(r"^  (\w+),$", block, flags=re.MULTILINE))

    assert exported == api_names() - {"version"}


def test_types_declare_every_member() -> None:
    types = (SDK / "tracker.d.ts").read_text()
    interface = types[types.index("export interface BookMediaTracker {") :]
    interface = interface[: interface.index("\n}\n")]
    members = set(re.findall(r"^  (?:readonly )?(\w+)[(<:]", interface, flags=re.MULTILINE))
    declared = set(re.findall(r"^export declare const (\w+):", types, flags=re.MULTILINE))

    assert members == api_names()
    assert declared == api_names() - {"version"}
