"""Fault injection for the Pub/Sub test server.

A `FaultInjector` stores one `FaultSettings` at a time. Each targeted RPC
handler calls `FaultInjector.apply` before doing any work, and that call
returns normally, sleeps, blocks or aborts the RPC with a gRPC status as the
current mode requires.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import random
import threading
from collections.abc import Iterable

import grpc

logger = logging.getLogger(__name__)

# The collector publishes with Publish and checks readiness with GetTopic or
# with TestIamPermissions on the topic, so these are the default targets.
DEFAULT_FAULT_METHODS = frozenset({"Publish", "GetTopic", "TestIamPermissions"})
PARTIAL_FAULT_METHODS = frozenset({"Publish"})

# How often a frozen call checks whether its client has gone away.
_FROZEN_POLL_SECONDS = 0.05


class FaultMode(enum.StrEnum):
    """Behaviour of targeted RPCs."""

    OK = "ok"
    UNAVAILABLE = "unavailable"
    SLOW = "slow"
    DEADLINE = "deadline"
    INTERNAL = "internal"
    PARTIAL = "partial"
    FROZEN = "frozen"


@dataclasses.dataclass(frozen=True)
class FaultSettings:
    """Current fault mode and its parameters.

    `delay_seconds` is used by `slow`, `failure_fraction` and `seed` by
    `partial`. `methods` contains the short RPC names the fault applies to,
    such as "Publish".
    """

    mode: FaultMode = FaultMode.OK
    delay_seconds: float = 0.0
    failure_fraction: float = 0.0
    seed: int = 0
    methods: frozenset[str] = DEFAULT_FAULT_METHODS

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode.value,
            "delay_seconds": self.delay_seconds,
            "failure_fraction": self.failure_fraction,
            "seed": self.seed,
            "methods": sorted(self.methods),
        }


class FaultInjector:
    """Thread-safe holder of the fault settings that RPC handlers consult."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._condition = threading.Condition()
        self._settings = FaultSettings()
        self._rng = random.Random(0)
        self._injected_failures = 0

    @property
    def settings(self) -> FaultSettings:
        with self._condition:
            return self._settings

    @property
    def injected_failures(self) -> int:
        """Number of RPCs that this injector has failed since the last change."""
        with self._condition:
            return self._injected_failures

    def configure(
        self,
        mode: FaultMode | str,
        *,
        delay_seconds: float = 1.0,
        failure_fraction: float = 0.5,
        seed: int = 0,
        methods: Iterable[str] | None = None,
    ) -> FaultSettings:
        """Validate and install new settings, and release frozen calls.

        Raises ValueError on an unknown mode, a negative or infinite delay, a fraction
        outside [0, 1] or a string as `methods`. When `methods` is None,
        `partial` targets Publish only and every other mode targets
        `DEFAULT_FAULT_METHODS`.
        """
        try:
            fault_mode = FaultMode(mode)
        except ValueError:
            valid = ", ".join(m.value for m in FaultMode)
            raise ValueError(f"invalid fault mode {mode!r}; expected one of: {valid}") from None
        delay = float(delay_seconds)
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(
                f"invalid delay_seconds {delay_seconds!r}; expected a finite value >= 0"
            )
        fraction = float(failure_fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(
                f"invalid failure_fraction {failure_fraction!r}; expected a value in [0, 1]"
            )
        if isinstance(methods, str):
            raise ValueError(f"invalid methods {methods!r}; expected a list of RPC names")
        if methods is None:
            targets = (
                PARTIAL_FAULT_METHODS if fault_mode is FaultMode.PARTIAL else DEFAULT_FAULT_METHODS
            )
        else:
            targets = frozenset(methods)
        settings = FaultSettings(
            mode=fault_mode,
            delay_seconds=delay if fault_mode is FaultMode.SLOW else 0.0,
            failure_fraction=fraction if fault_mode is FaultMode.PARTIAL else 0.0,
            seed=int(seed),
            methods=targets,
        )
        with self._condition:
            self._settings = settings
            self._rng = random.Random(settings.seed)
            self._injected_failures = 0
            self._condition.notify_all()
        logger.info("fault settings changed: %s", settings.to_dict())
        return settings

    def wake_all(self) -> None:
        """Wake frozen calls so that they notice a server stop."""
        with self._condition:
            self._condition.notify_all()

    def apply(self, method: str, context: grpc.ServicerContext) -> None:
        """Delay, block or abort the RPC `method` as the current settings require.

        Returns normally when the call should go on to the real handler.
        Aborting raises, as `grpc.ServicerContext.abort` does.
        """
        while True:
            with self._condition:
                settings = self._settings
                if settings.mode is FaultMode.OK or method not in settings.methods:
                    return
                if settings.mode is FaultMode.FROZEN:
                    self._wait_while_frozen(settings, context)
                    if self._stopping.is_set():
                        break
                    if not context.is_active():
                        # The client has cancelled or its deadline has passed,
                        # so it never receives this status. Aborting now frees
                        # the worker thread.
                        break
                    # The mode changed: apply the new settings to this call.
                    continue
                if (
                    settings.mode is FaultMode.PARTIAL
                    and self._rng.random() >= settings.failure_fraction
                ):
                    return
                if settings.mode is not FaultMode.SLOW:
                    self._injected_failures += 1
            break

        self._finish(settings, method, context)

    def _wait_while_frozen(self, settings: FaultSettings, context: grpc.ServicerContext) -> None:
        # Called with self._condition held.
        while self._settings is settings and not self._stopping.is_set() and context.is_active():
            self._condition.wait(_FROZEN_POLL_SECONDS)

    def _finish(self, settings: FaultSettings, method: str, context: grpc.ServicerContext) -> None:
        mode = settings.mode
        if self._stopping.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "The test server is shutting down.")
        if mode is FaultMode.FROZEN:
            context.abort(grpc.StatusCode.CANCELLED, f"{method}: frozen call ended by its client.")
        if mode is FaultMode.SLOW:
            if self._stopping.wait(settings.delay_seconds):
                context.abort(grpc.StatusCode.UNAVAILABLE, "The test server is shutting down.")
            return
        if mode is FaultMode.UNAVAILABLE or mode is FaultMode.PARTIAL:
            context.abort(
                grpc.StatusCode.UNAVAILABLE, f"{method}: injected fault, service unavailable."
            )
        if mode is FaultMode.DEADLINE:
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{method}: injected fault, deadline exceeded."
            )
        if mode is FaultMode.INTERNAL:
            context.abort(grpc.StatusCode.INTERNAL, f"{method}: injected fault, internal error.")
        raise AssertionError(f"unhandled fault mode {mode!r}")
