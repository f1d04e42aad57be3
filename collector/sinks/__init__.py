"""Sinks: where accepted events go. A sink confirms each publish call only once it is durable."""

from collector.sinks.base import Message, Sink, SinkError, SinkOverloaded, SinkUnavailable

__all__ = ["Message", "Sink", "SinkError", "SinkOverloaded", "SinkUnavailable"]
