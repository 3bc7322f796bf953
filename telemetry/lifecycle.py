"""The serving phase of one process: starting, serving, draining, stopping.

Readiness reads the phase: only a serving process may get traffic. The server changes it on
its event loop; probes read it without a lock, because each change is one attribute write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class ServingPhase(StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPING = "stopping"


@dataclass(frozen=True)
class StartupProblem:
    """Why start-up has not finished yet: the component it waits for and what is wrong."""

    component: str
    message: str


class Lifecycle:
    """Tracks the phase, the last start-up problem and the deadline of the shutdown grace."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.phase = ServingPhase.STARTING
        self.startup_problem: StartupProblem | None = None
        self._grace_deadline: float | None = None

    @property
    def is_serving(self) -> bool:
        return self.phase is ServingPhase.SERVING

    @property
    def is_starting(self) -> bool:
        return self.phase is ServingPhase.STARTING

    def mark_serving(self) -> None:
        """Finish start-up, unless shutdown has begun already."""
        self.startup_problem = None
        if self.phase is ServingPhase.STARTING:
            self.phase = ServingPhase.SERVING

    def start_draining(self) -> None:
        """Make readiness fail while requests are still served."""
        if self.phase in (ServingPhase.STARTING, ServingPhase.SERVING):
            self.phase = ServingPhase.DRAINING

    def start_stopping(self, grace_s: float) -> None:
        """Stop taking requests; work in flight has `grace_s` seconds from now to finish."""
        self.phase = ServingPhase.STOPPING
        if self._grace_deadline is None:
            self._grace_deadline = self._clock() + grace_s

    def grace_remaining_s(self, default_s: float) -> float:
        """Return the seconds left of the grace, or `default_s` when no server set a deadline.

        Without `visioncraft serve` (a test client, another ASGI server) nobody calls
        `start_stopping`, so the lifespan's shutdown starts the grace itself.
        """
        if self._grace_deadline is None:
            self.start_stopping(default_s)
        assert self._grace_deadline is not None
        return max(0.0, self._grace_deadline - self._clock())
