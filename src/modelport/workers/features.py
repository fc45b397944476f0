"""The built-in feature consumer: the ``events`` topic into online features.

What it computes and how its effects are made exactly once is the service's business
(``services.event_features``); this is the stream side of it.
"""

from __future__ import annotations

from modelport.services.event_features import EventFeatures
from modelport.stores.outbox import EVENTS
from modelport.stores.streams import Message


class FeatureConsumer:
    """Recent items, popularity and co-occurrence (consumer group ``features``)."""

    topic = EVENTS
    group = "features"

    def __init__(self, features: EventFeatures) -> None:
        self._features = features

    async def handle(self, messages: list[Message]) -> None:
        await self._features.apply(self.group, messages)
