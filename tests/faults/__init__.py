"""Helpers for the fault matrix and the soak script.

``load`` posts bounded event traffic and records every response, ``system`` starts and breaks
the services the collector depends on (Redis, the Pub/Sub test server, a tmpfs data folder)
and reads process statistics, and ``delivery`` checks where acknowledged events ended up.
"""
