"""The production stream: Redis Streams with consumer groups.

Keys (``prefix`` is ``MODELPORT_STREAM_KEY_PREFIX``):

    {prefix}:{topic}                  the topic's stream; one consumer group per worker kind
    {prefix}:dead-letters:{tenant}    the tenant's dead letters, with topic, group and error
    {prefix}:dead-letter-seq          numbers dead letters across tenants

Redis keeps what the contract needs: a group's position and pending entries list (XREADGROUP,
XACK), delivery counts (XPENDING) and ownership transfer of idle entries (XAUTOCLAIM). Dead
letters are numbered from one counter, so an id names one tenant's letter only and another
tenant asking for it finds nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from modelport.stores.streams import DeadLetter, Message, Outgoing

_ENTRY_ID = re.compile(r"^\d+-\d+$")
_PAGE = 200

# One command per batch rather than a pipeline of XADDs: one reply to read instead of one per
# message. Its one argument is a JSON array of [tenant, key, payload as JSON text] that Lua
# decodes (strings come back byte for byte): the relay's process encodes a batch in one call
# instead of packing three arguments per message, which cost it more than Redis takes to decode.
_PUBLISH = """
local messages = cjson.decode(ARGV[1])
for i = 1, #messages do
  local m = messages[i]
  redis.call('XADD', KEYS[1], '*', 'tenant', m[1], 'key', m[2], 'payload', m[3])
end
return #messages
"""
_PUBLISH_CHUNK = 1000

#: What XRANGE and XREADGROUP hand back with ``decode_responses``: (id, fields) pairs.
Entries = list[tuple[str, dict[Any, Any]]]


def _entry(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-", 1)
    return int(ms), int(seq)


def _published_at(entry_id: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(entry_id.split("-", 1)[0]) / 1000, dt.UTC)


def _message(entry_id: str, fields: dict[str, str], attempts: int) -> Message:
    return Message(
        id=entry_id,
        tenant=fields["tenant"],
        key=fields["key"],
        payload=orjson.loads(fields["payload"]),
        attempts=attempts,
        published_at=_published_at(entry_id),
    )


def _dead_letter(entry_id: str, fields: dict[str, str]) -> DeadLetter:
    return DeadLetter(
        id=entry_id.split("-", 1)[0],
        topic=fields["topic"],
        group=fields["group"],
        tenant=fields["tenant"],
        key=fields["key"],
        payload=orjson.loads(fields["payload"]),
        attempts=int(fields["attempts"]),
        error=fields["error"],
        failed_at=dt.datetime.fromisoformat(fields["failed_at"]),
    )


class RedisStream:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "mp:s",
        owned: bool = False,
        max_block_s: float | None = None,
    ) -> None:
        """``redis`` must decode responses (``decode_responses=True``); a read waits at most
        ``max_block_s``, which must stay under its socket timeout."""
        self._redis = redis
        self._prefix = prefix
        self._owned = owned
        self._max_block_s = max_block_s
        self._groups: set[tuple[str, str]] = set()
        self._publish = redis.register_script(_PUBLISH)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "mp:s", timeout_s: float = 30.0) -> RedisStream:
        """A client of its own; a Redis that hangs fails a command after ``timeout_s``
        (the relay and the workers retry) instead of holding it forever."""
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=min(timeout_s, 5.0),
        )
        return cls(client, prefix=prefix, owned=True, max_block_s=timeout_s / 2)

    def topic_key(self, topic: str) -> str:
        return f"{self._prefix}:{topic}"

    def dead_letters_key(self, tenant: str) -> str:
        return f"{self._prefix}:dead-letters:{tenant}"

    # ------------------------------------------------------------------ publish and read

    async def publish(self, topic: str, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        key = self.topic_key(topic)
        for start in range(0, len(messages), _PUBLISH_CHUNK):
            batch = orjson.dumps(
                [
                    (m.tenant, m.key, m.encoded or orjson.dumps(m.payload).decode())
                    for m in messages[start : start + _PUBLISH_CHUNK]
                ]
            )
            await self._publish(keys=[key], args=[batch])

    async def read(
        self, topic: str, group: str, consumer: str, count: int, block_s: float
    ) -> list[Message]:
        key = self.topic_key(topic)
        if self._max_block_s is not None:
            block_s = min(block_s, self._max_block_s)
        # BLOCK 0 would wait forever: a read that must not wait leaves BLOCK out.
        block = max(1, int(block_s * 1000)) if block_s > 0 else None
        await self._ensure_group(topic, group)
        try:
            reply = await self._redis.xreadgroup(
                group, consumer, {key: ">"}, count=count, block=block
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream was deleted since the group was made here: make it again.
            self._groups.discard((topic, group))
            await self._ensure_group(topic, group)
            reply = await self._redis.xreadgroup(
                group, consumer, {key: ">"}, count=count, block=block
            )
        if not reply:
            return []
        [(_, entries)] = cast(list[tuple[str, Entries]], reply)
        return [_message(entry_id, fields, 1) for entry_id, fields in entries if fields]

    async def read_after(
        self, topic: str, after: str | None, count: int, block_s: float
    ) -> list[Message]:
        if self._max_block_s is not None:
            block_s = min(block_s, self._max_block_s)
        block = max(1, int(block_s * 1000)) if block_s > 0 else None
        start = after if after is not None and _ENTRY_ID.match(after) else "0-0"
        reply = await self._redis.xread({self.topic_key(topic): start}, count=count, block=block)
        if not reply:
            return []
        [(_, entries)] = cast(list[tuple[str, Entries]], reply)
        return [_message(entry_id, fields, 1) for entry_id, fields in entries if fields]

    async def last_id(self, topic: str) -> str | None:
        newest = cast(Entries, await self._redis.xrevrange(self.topic_key(topic), count=1))
        return str(newest[0][0]) if newest else None

    async def ack(self, topic: str, group: str, ids: Sequence[str]) -> None:
        valid = [i for i in ids if _ENTRY_ID.match(i)]
        if valid:
            await self._redis.xack(self.topic_key(topic), group, *valid)

    async def claim_stale(
        self, topic: str, group: str, consumer: str, idle_s: float, count: int
    ) -> list[Message]:
        key = self.topic_key(topic)
        claimed: Entries = []
        cursor = "0-0"
        # XAUTOCLAIM looks at a bounded part of the pending list per call: walk it until
        # ``count`` are claimed or the list ends.
        while len(claimed) < count:
            try:
                reply = await self._redis.xautoclaim(
                    key, group, consumer, int(idle_s * 1000), cursor, count=count - len(claimed)
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    return []  # no group, nothing pending
                raise
            cursor, found, deleted = reply[0], reply[1], reply[2] if len(reply) > 2 else []
            claimed.extend(found)
            if deleted:
                # Pending entries whose message was trimmed away: nothing left to deliver.
                await self._redis.xack(key, group, *deleted)
            if cursor == "0-0":
                break
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields]
        if not claimed:
            return []
        # XAUTOCLAIM counted the delivery; XPENDING tells how many there were in all.
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in claimed:
                pipe.xpending_range(key, group, min=entry_id, max=entry_id, count=1)
            details = await pipe.execute()
        return [
            _message(entry_id, fields, int(detail[0]["times_delivered"]) if detail else 1)
            for (entry_id, fields), detail in zip(claimed, details, strict=True)
        ]

    # ------------------------------------------------------------------ dead letters

    async def dead_letter(self, topic: str, group: str, message: Message, error: str) -> None:
        number = await self._redis.incr(f"{self._prefix}:dead-letter-seq")
        fields: dict[Any, Any] = {
            "topic": topic,
            "group": group,
            "tenant": message.tenant,
            "key": message.key,
            "payload": orjson.dumps(message.payload).decode(),
            "attempts": str(message.attempts),
            "error": error,
            "message_id": message.id,
            "failed_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            # The counter only grows, so ids stay increasing within each tenant's stream.
            pipe.xadd(self.dead_letters_key(message.tenant), fields, id=f"{number}-0")
            pipe.xack(self.topic_key(topic), group, message.id)
            await pipe.execute()

    async def dead_letters(
        self, tenant: str, topic: str | None, group: str | None, limit: int
    ) -> list[DeadLetter]:
        key = self.dead_letters_key(tenant)
        found: list[DeadLetter] = []
        start = "-"
        while len(found) < limit:
            entries = await self._range(key, start, "+", _PAGE)
            for entry_id, fields in entries:
                letter = _dead_letter(entry_id, fields)
                if topic in (None, letter.topic) and group in (None, letter.group):
                    found.append(letter)
            if len(entries) < _PAGE:
                break
            start = f"({entries[-1][0]}"
        return found[:limit]

    async def replay(self, tenant: str, ids: Sequence[str]) -> int:
        key = self.dead_letters_key(tenant)
        replayed = 0
        for number in sorted({int(i) for i in ids if i.isdigit()}):
            entries = await self._range(key, f"{number}-0", f"{number}-0", 1)
            if not entries:
                continue
            [(entry_id, fields)] = entries
            async with self._redis.pipeline(transaction=True) as pipe:
                again: dict[Any, Any] = {k: fields[k] for k in ("tenant", "key", "payload")}
                pipe.xadd(self.topic_key(fields["topic"]), again)
                pipe.xdel(key, entry_id)
                _, removed = await pipe.execute()
            replayed += int(removed)
        return replayed

    async def drop(self, tenant: str, ids: Sequence[str]) -> int:
        numbers = {int(i) for i in ids if i.isdigit()}
        if not numbers:
            return 0
        return int(
            await self._redis.xdel(self.dead_letters_key(tenant), *(f"{n}-0" for n in numbers))
        )

    # ------------------------------------------------------------------ watching

    async def lag(self, topic: str, group: str) -> int:
        key = self.topic_key(topic)
        try:
            groups = await self._redis.xinfo_groups(key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return 0
            raise
        info = next((g for g in groups if g["name"] == group), None)
        if info is None:
            return int(await self._redis.xlen(key))
        unread = info.get("lag")
        if unread is None:
            # Redis cannot tell after deletions inside the stream: count past the position.
            unread = await self._count_after(key, str(info["last-delivered-id"]))
        return int(info["pending"]) + int(unread)

    async def trim(self, topic: str) -> int:
        """Delete the messages of ``topic`` every group has read and acknowledged; returns how
        many. A group created afterwards starts after them."""
        key = self.topic_key(topic)
        try:
            groups = await self._redis.xinfo_groups(key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return 0
            raise
        if not groups:
            return 0  # no group yet: every message is still to be read
        keep: list[tuple[int, int]] = []
        for info in groups:
            ms, seq = _entry(str(info["last-delivered-id"]))
            keep.append((ms, seq + 1))  # the first message this group has not read
            if int(info["pending"]):
                summary = await self._redis.xpending(key, info["name"])
                keep.append(_entry(str(summary["min"])))
        ms, seq = min(keep)
        return int(await self._redis.xtrim(key, minid=f"{ms}-{seq}", approximate=False))

    async def close(self) -> None:
        if self._owned:
            await self._redis.aclose()

    # ------------------------------------------------------------------ internals

    async def _ensure_group(self, topic: str, group: str) -> None:
        if (topic, group) in self._groups:
            return
        try:
            await self._redis.xgroup_create(self.topic_key(topic), group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add((topic, group))

    async def _range(self, key: str, start: str, end: str, count: int) -> Entries:
        return cast(Entries, await self._redis.xrange(key, min=start, max=end, count=count))

    async def _count_after(self, key: str, position: str) -> int:
        counted = 0
        start = f"({position}"
        while entries := await self._range(key, start, "+", 1000):
            counted += len(entries)
            start = f"({entries[-1][0]}"
        return counted
