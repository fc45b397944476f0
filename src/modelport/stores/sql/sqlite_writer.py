"""One SQLite connection in one thread of its own, for a writer whose transactions are several
statements: the caller hands the whole transaction over as one function, and the event loop
waits for it once.

Through aiosqlite (what SQLAlchemy's async SQLite dialect drives) every statement goes to the
driver's thread and its result comes back through the event loop: under load a transaction of
five statements waited five times for a busy loop, which was most of its time. The connection
is the same database with the same settings (WAL, foreign keys, a 30 s busy timeout) and the
same durability as the engine's.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class SqliteWriter:
    def __init__(self, path: str, *, timeout_s: float = 30.0) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._db: sqlite3.Connection | None = None

    async def run(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        """``transaction(connection)`` in the writer's thread. The connection is in autocommit
        mode: the function begins and commits (or rolls back) itself."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, transaction)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)

    def _call(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            db = sqlite3.connect(
                self._path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._db = db
        return transaction(self._db)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
