"""What a stream consumer is: a topic, a consumer group and an idempotent batch handler."""

from __future__ import annotations

from typing import Protocol

from modelport.stores.streams import Message


class Consumer(Protocol):
    topic: str
    """The topic read, e.g. ``"events"``."""
    group: str
    """The consumer group, e.g. ``"features"``: each group sees every message once."""

    async def handle(self, messages: list[Message]) -> None:
        """Apply a batch; must be idempotent per message.key (a redelivered message applies
        nothing twice). Raising fails the batch; the runtime retries and isolates poison."""
        ...
