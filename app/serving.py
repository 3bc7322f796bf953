"""uvicorn with the shutdown sequence that Kubernetes needs.

On SIGTERM, uvicorn closes its listening socket at once, while Kubernetes goes on routing new
connections to the pod until the endpoint removal has reached every node. This server takes
over SIGTERM and SIGINT instead:

1. Readiness responds with 503 at once, and requests go on being served for SHUTDOWN_DRAIN_S (after
   SIGTERM; SIGINT, the Ctrl+C of a developer, skips the drain).
2. uvicorn then stops accepting connections and waits up to SHUTDOWN_GRACE_S for requests in
   flight. The app's lifespan gives generations in flight what is left of that grace.
3. The lifespan flushes telemetry within TELEMETRY_FLUSH_S and the process exits with 0.

One more signal during the drain ends the drain at once; a signal after that makes uvicorn stop
waiting for requests in flight and skip the lifespan's shutdown (its own rule for a second
Ctrl+C).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import uvicorn

from telemetry.lifecycle import Lifecycle

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulServer(uvicorn.Server):
    """A uvicorn server that drains before it stops; see the module's docstring."""

    def __init__(
        self, config: uvicorn.Config, *, lifecycle: Lifecycle, drain_s: float, grace_s: float
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_s = drain_s
        self.grace_s = grace_s
        self._drain: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGTERM and SIGINT on the event loop in place of uvicorn's handlers.

        uvicorn calls this around `serve`, in the event loop's thread. uvicorn's own version
        re-raises the signal after shutdown, which would end the process with 143 instead of 0.
        """
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread receives signals
            return
        loop = asyncio.get_running_loop()
        for signal_number in HANDLED_SIGNALS:
            loop.add_signal_handler(signal_number, self.handle_signal, signal_number)
        try:
            yield
        finally:
            for signal_number in HANDLED_SIGNALS:
                loop.remove_signal_handler(signal_number)

    def handle_signal(self, signal_number: int) -> None:
        """Start the drain on the first signal; end it on the second; force exit on the third."""
        name = signal.Signals(signal_number).name
        if self.should_exit:
            logger.warning("%s while stopping: no longer waiting for requests in flight", name)
            self.force_exit = True
            return
        if self._drain is not None:
            logger.info("%s during the drain: stopping now", name)
            self._drain.cancel()
            return
        drain_s = self.drain_s if signal_number == signal.SIGTERM else 0.0
        self.lifecycle.start_draining()
        logger.info(
            "%s received: readiness responds with 503; serving for %.1f s more, then %.1f s for "
            "requests in flight",
            name,
            drain_s,
            self.grace_s,
        )
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_stop(drain_s))

    async def _drain_then_stop(self, drain_s: float) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(drain_s)
        self.lifecycle.start_stopping(self.grace_s)
        self.should_exit = True
