"""A consumer with an exactly-once effect, for the worker crash test: loaded by a real
``modelport worker --consumer crash_consumer:make`` (``PYTHONPATH`` names this folder).

Each message adds 1 to its item's counter in a Redis hash. The counter and a processed-key
marker change in one Lua script (atomic in Redis), as the built-in feature consumers do, so a
redelivered message finds its marker and adds nothing. A message whose payload says
``poison`` fails every try: the others of its batch are applied first, then the batch raises.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from redis.asyncio import Redis

from modelport.stores.streams import Message

#: KEYS: the processed markers (a hash), the counters (a hash), the count of redeliveries
#: absorbed, what each worker process applied (a hash); ARGV: the worker's pid, then key,
#: item, key, item …
APPLY = """
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], 1) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1)
    redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
  else
    redis.call('INCR', KEYS[3])
  end
end
return 0
"""

GROUP = "crash-counters"


def keys(prefix: str) -> tuple[str, str, str, str]:
    """The processed markers' and the counters' hashes, the absorbed redeliveries, and what
    each worker process applied."""
    return (
        f"{prefix}:processed",
        f"{prefix}:counters",
        f"{prefix}:absorbed",
        f"{prefix}:by-worker",
    )


def busy(prefix: str, pid: int) -> str:
    """Set while worker ``pid`` is inside a batch (with ``CRASH_TEST_DELAY_S``)."""
    return f"{prefix}:busy:{pid}"


class CountingConsumer:
    group = GROUP

    def __init__(self, redis: Redis, topic: str, prefix: str) -> None:
        self.topic = topic
        self._redis = redis
        self._keys = keys(prefix)
        self._prefix = prefix
        self._apply: Any = redis.register_script(APPLY)
        self.delay_s = float(os.environ.get("CRASH_TEST_DELAY_S", "0"))

    async def handle(self, messages: list[Message]) -> None:
        if self.delay_s:
            # A slower consumer, saying while it holds a batch (the key lives as long).
            await self._redis.set(busy(self._prefix, os.getpid()), 1, px=int(self.delay_s * 1000))
            await asyncio.sleep(self.delay_s)
        good = [m for m in messages if not m.payload.get("poison")]
        if good:
            args: list[str] = [str(os.getpid())]
            for m in good:
                args += [m.key, str(m.payload["item"])]
            await self._apply(keys=list(self._keys), args=args)
        poison = [m.key for m in messages if m.payload.get("poison")]
        if poison:
            raise ValueError(f"poison event {poison[0]}: cannot be applied")


def make(services: Any) -> CountingConsumer:
    url = services.settings.redis_url.get_secret_value()
    return CountingConsumer(
        Redis.from_url(url, decode_responses=True),
        os.environ["CRASH_TEST_TOPIC"],
        os.environ["CRASH_TEST_PREFIX"],
    )
