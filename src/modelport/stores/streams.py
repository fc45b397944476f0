"""The stream contract: topics of messages, read by consumer groups, at least once.

    Stream                the contract below; one suite tests every backend
    ├── SqlStream         the embedded default: tables in the registry's SQL database
    └── RedisStream       production: Redis Streams, consumer groups, XAUTOCLAIM

A message is delivered to one consumer of each group; it stays pending until acknowledged.
A consumer that dies leaves its messages pending; ``claim_stale`` hands them to another after
``idle_s``. Each delivery counts an attempt; the worker runtime moves a message that failed its
last attempt to the group's dead letters (``dead_letter``), where an operator lists, replays or
drops it. Delivery is at least once: effects are made exactly once by their consumers (keyed by
``Message.key``). Another backend (Kafka, NATS JetStream) is a new module implementing this.

Beside the groups, a topic can be *followed* without one: ``read_after`` returns the messages
after a position the reader keeps itself (nothing pending, nothing acknowledged). Every server
replica's search index follows the ``catalog`` topic so (``services.search_indexer``): each
replica must see every message, and a replica that starts from a snapshot resumes at the
snapshot's position rather than where some group left off.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol


class Outgoing(NamedTuple):
    """A message to publish. A named tuple, not a frozen dataclass: the event intake makes
    one per event, and a frozen dataclass's ``__init__`` costs three times as much."""

    tenant: str
    key: str
    """Unique per message, stable across republishing: what effects deduplicate on."""
    payload: dict[str, Any]
    encoded: str | None = None
    """``payload`` as JSON, when the publisher has it already (a backend that stores JSON
    text takes it as it is rather than encoding the payload again)."""


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    """The backend's id, increasing in publish order within a topic."""
    tenant: str
    key: str
    payload: dict[str, Any]
    attempts: int
    """Deliveries so far, this one included."""
    published_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    topic: str
    group: str
    tenant: str
    key: str
    payload: dict[str, Any]
    attempts: int
    error: str
    failed_at: dt.datetime


class Stream(Protocol):
    async def publish(self, topic: str, messages: Sequence[Outgoing]) -> None: ...

    async def read(
        self, topic: str, group: str, consumer: str, count: int, block_s: float
    ) -> list[Message]:
        """New messages for ``group`` (created at the topic's start if missing), now pending
        for ``consumer``; waits up to ``block_s`` when there are none."""
        ...

    async def ack(self, topic: str, group: str, ids: Sequence[str]) -> None: ...

    async def read_after(
        self, topic: str, after: str | None, count: int, block_s: float
    ) -> list[Message]:
        """Up to ``count`` messages published after id ``after`` (from the topic's start when
        None), in order, without a group; waits up to ``block_s`` when there are none."""
        ...

    async def last_id(self, topic: str) -> str | None:
        """The id of the newest message of ``topic`` (None when it holds none)."""
        ...

    async def claim_stale(
        self, topic: str, group: str, consumer: str, idle_s: float, count: int
    ) -> list[Message]:
        """Messages pending longer than ``idle_s`` (their consumer died or hangs), now pending
        for ``consumer``, their attempt counted again."""
        ...

    async def dead_letter(self, topic: str, group: str, message: Message, error: str) -> None:
        """Move ``message`` to the group's dead letters (and acknowledge it)."""
        ...

    async def dead_letters(
        self, tenant: str, topic: str | None, group: str | None, limit: int
    ) -> list[DeadLetter]: ...

    async def replay(self, tenant: str, ids: Sequence[str]) -> int:
        """Publish the tenant's dead letters ``ids`` to their topic again; returns how many."""
        ...

    async def drop(self, tenant: str, ids: Sequence[str]) -> int: ...

    async def lag(self, topic: str, group: str) -> int:
        """Messages of ``topic`` the group has not acknowledged (pending or not yet read)."""
        ...

    async def trim(self, topic: str) -> int:
        """Delete the messages of ``topic`` that every group has acknowledged; returns how
        many. A topic without groups keeps all of them."""
        ...

    async def close(self) -> None: ...
