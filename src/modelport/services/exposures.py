"""Exposures recorded at serving time without making the request wait.

``record`` only appends to a bounded buffer; a writer task the recorder owns stores what has
accumulated in one transaction, then whatever came meanwhile in the next (group commit, as
event intake does), so under load a few large inserts carry many requests' exposures. A
failed write is logged and its exposures are lost, never retried into a growing backlog: an
exposure is telemetry, and the answer it describes has long been sent. When the buffer is full
new exposures are dropped and counted, so a stalled database costs memory up to a bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from modelport.stores.experiments import Exposure, ExposureStore

log = structlog.get_logger("modelport.experiments")

#: Exposures held in memory at most while the database is slow.
MAX_PENDING = 100_000


class ExposureRecorder:
    def __init__(
        self,
        store: ExposureStore,
        on_written: Callable[[set[tuple[str, str]]], Awaitable[None]] | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        """``on_written``: told which (tenant, experiment) got exposures, after each write
        (the guardrail looks at them)."""
        self._store = store
        self._pending: list[Exposure] = []
        self._writer: asyncio.Task[None] | None = None
        self._max_pending = max_pending
        self.on_written = on_written
        self.dropped = 0
        """Exposures lost to a full buffer or a failed write since the start."""

    def record(self, exposure: Exposure) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(exposure)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="exposures-group-commit")

    async def flush(self) -> None:
        """Wait until everything recorded so far is written (or failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def close(self) -> None:
        await self.flush()

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._store.insert(batch)
            except Exception as exc:  # noqa: BLE001 - logged; the next batch may succeed
                self.dropped += len(batch)
                log.error("exposures_write_failed", count=len(batch), error=repr(exc))
                continue
            if self.on_written is not None:
                try:
                    await self.on_written({(x.tenant, x.experiment_id) for x in batch})
                except Exception as exc:  # noqa: BLE001 - the writer keeps writing
                    log.error("exposures_after_write_failed", error=repr(exc))
