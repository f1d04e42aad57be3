"""Servers that bench/run.py measures next to the collector: the ceiling and the obvious app."""
