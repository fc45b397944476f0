"""The production online store: latest values per entity in Redis, shared by every replica.

Key layout: one hash per tenant, view and entity key::

    {prefix}:{tenant}:{view}:{entity_key}      (prefix ``mp:f`` by default)
        ts        event time, seconds since the epoch, as Python's repr of the float
        v         the values: one JSON object, feature -> value (orjson)
        n:{hash}  the same values as numbers for the feature join: little-endian float32, one
                  per feature of the view in its order (NaN where the row has no value or the
                  feature is a string); ``hash`` names that list of features

Tenant and view names cannot contain ``:``, so the key parses unambiguously; the entity key is
everything after the third separator. One JSON blob per entity keeps a read at two fields per
key, whatever the number of features; the packed numbers let the feature join fill a batch's
tensors without decoding JSON. A reader whose view lists other features (another version of
the view wrote the row) finds no ``n:`` field under its hash and decodes ``v`` instead.

Writes go through one Lua script per chunk of rows: a row whose stored event time is newer is
skipped (stale); otherwise the hash is replaced (``ts``, ``v`` and the ``n:`` field of the
writing view) and the key expires at ``event_ts + ttl + grace`` (``PEXPIREAT``), so a value past
its TTL still reads as ``expired`` for the grace period before it reads as ``missing``.

Reads are one round trip too: one read-only Lua script doing ``HMGET key ts v`` for every key of
every view read (several script calls in one pipeline past ``READ_CHUNK`` keys). A pipeline of
one ``HMGET`` per key gives the same answer, but redis-py spends several microseconds of Python
on each pipelined command: for 200 keys, 2.4 ms (asyncio) and 1.3 ms (blocking) against 0.5
and 0.4 ms for the script. Scripts touch many keys, so Redis Cluster is not supported (the
writes need one node anyway); a primary with replicas is.

Every call is bounded: connect and read timeouts (0.5 s by default) and one immediate retry of a
failed connection. A Redis that does not answer raises ``FeatureStoreUnavailable`` (HTTP 503)
rather than holding the request. The blocking client used by ``read_blocking`` has its own
connection pool, so worker threads never touch the event loop.
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
import redis
import structlog
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from modelport.errors import FeatureStoreUnavailable
from modelport.stores.online import (
    FeatureRow,
    FeatureSpec,
    FeatureView,
    NumberRead,
    ReadResult,
    ViewRead,
    WriteResult,
)
from modelport.stores.online_values import DEFAULT_GRACE_S, Record, assemble

log = structlog.get_logger("modelport.features")

DEFAULT_PREFIX = "mp:f"

#: Rows per script call: bounds how long one call holds Redis (about a millisecond).
CHUNK_ROWS = 1000

# KEYS: one per row. ARGV: the name of the numbers field, then four per row: event ts, expiry
# (ms since the epoch), values (JSON), numbers (packed). An equal event time wins, as in the
# memory backend (see online_values.wins). The row replaces the whole hash, so numbers packed
# for another version of the view do not outlive it.
_WRITE = """
local written, stale = 0, 0
local field = ARGV[1]
for i = 1, #KEYS do
  local at = 4 * i - 2
  local ts = ARGV[at]
  local stored = redis.call('HGET', KEYS[i], 'ts')
  if stored and tonumber(stored) > tonumber(ts) then
    stale = stale + 1
  else
    redis.call('DEL', KEYS[i])
    redis.call('HSET', KEYS[i], 'ts', ts, 'v', ARGV[at + 2], field, ARGV[at + 3])
    redis.call('PEXPIREAT', KEYS[i], ARGV[at + 1])
    written = written + 1
  end
end
return {written, stale}
"""


# KEYS: the keys to read. Returns ts and v of each (nil where absent), flattened.
_READ = """
local out = {}
for i = 1, #KEYS do
  local found = redis.call('HMGET', KEYS[i], 'ts', 'v')
  out[2 * i - 1] = found[1]
  out[2 * i] = found[2]
end
return out
"""

#: Keys per read script call; a larger read sends several calls in one pipeline, so that no
#: call holds Redis for more than about a millisecond.
READ_CHUNK = 1000

# The feature join's read. KEYS: the keys of every segment, in order. ARGV: the number of
# segments, then per segment its number of keys and the name of its numbers field. Returns
# three items per key: the event time, the packed numbers, and the JSON values only when the
# numbers are not there (nil, nil, nil without a record).
_READ_NUMBERS = """
local out = {}
local key = 0
local arg = 2
for _ = 1, tonumber(ARGV[1]) do
  local nkeys, field = tonumber(ARGV[arg]), ARGV[arg + 1]
  arg = arg + 2
  for _ = 1, nkeys do
    key = key + 1
    local found = redis.call('HMGET', KEYS[key], 'ts', field)
    out[3 * key - 2] = found[1]
    out[3 * key - 1] = found[2]
    out[3 * key] = false
    if found[1] and not found[2] then
      out[3 * key] = redis.call('HGET', KEYS[key], 'v')
    end
  end
end
return out
"""


class RedisOnlineStore:
    def __init__(
        self,
        client: AsyncRedis,
        sync_client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self._client = client
        self._sync = sync_client
        self._prefix = prefix
        self._grace_s = grace_s
        self._script = client.register_script(_WRITE)
        self._read_script = client.register_script(_READ)
        self._sync_read_script = sync_client.register_script(_READ)
        self._numbers_script = client.register_script(_READ_NUMBERS)
        self._sync_numbers_script = sync_client.register_script(_READ_NUMBERS)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_s: float = 0.5,
        prefix: str = DEFAULT_PREFIX,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> RedisOnlineStore:
        """Both clients, each with its own pool, every call bounded by ``timeout_s``."""
        bounds: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        }
        return cls(
            AsyncRedis.from_url(url, retry=AsyncRetry(NoBackoff(), 1), **bounds),
            redis.Redis.from_url(url, retry=Retry(NoBackoff(), 1), **bounds),
            prefix=prefix,
            grace_s=grace_s,
        )

    def key(self, tenant: str, view: str, entity_key: str) -> str:
        return f"{self._prefix}:{tenant}:{view}:{entity_key}"

    async def load(self) -> None:
        """Nothing to load: Redis holds the state."""

    async def write(self, view: FeatureView, rows: Sequence[FeatureRow]) -> WriteResult:
        written = stale = 0
        with _unavailable("write"):
            for start in range(0, len(rows), CHUNK_ROWS):
                keys, args = self._write_args(view, rows[start : start + CHUNK_ROWS])
                done, skipped = await self._script(keys=keys, args=args)
                written += int(done)
                stale += int(skipped)
        return WriteResult(written=written, stale=stale)

    async def read(self, reads: Sequence[ViewRead], now: float | None = None) -> ReadResult:
        records = await self.read_records(reads)
        return assemble(reads, records, time.time() if now is None else now, self._grace_s)

    def read_blocking(self, reads: Sequence[ViewRead], now: float | None = None) -> ReadResult:
        records = self.read_records_blocking(reads)
        return assemble(reads, records, time.time() if now is None else now, self._grace_s)

    async def read_records(self, reads: Sequence[ViewRead]) -> list[list[Record | None]]:
        keys = self._keys(reads)
        with _unavailable("read"):
            if len(keys) <= READ_CHUNK:
                flat = await self._read_script(keys=keys) if keys else []
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for start in range(0, len(keys), READ_CHUNK):
                        chunk = keys[start : start + READ_CHUNK]
                        await self._read_script(keys=chunk, client=pipe)
                    flat = [item for reply in await pipe.execute() for item in reply]
        return self._records(reads, flat)

    def read_records_blocking(self, reads: Sequence[ViewRead]) -> list[list[Record | None]]:
        keys = self._keys(reads)
        with _unavailable("read"):
            if len(keys) <= READ_CHUNK:
                flat = self._sync_read_script(keys=keys) if keys else []
            else:
                with self._sync.pipeline(transaction=False) as pipe:
                    for start in range(0, len(keys), READ_CHUNK):
                        self._sync_read_script(keys=keys[start : start + READ_CHUNK], client=pipe)
                    flat = [item for reply in pipe.execute() for item in reply]
        return self._records(reads, flat)

    async def read_numbers(self, reads: Sequence[ViewRead]) -> list[NumberRead]:
        calls = self._number_calls(reads)
        with _unavailable("read"):
            if len(calls) == 1:
                keys, args = calls[0]
                flat = await self._numbers_script(keys=keys, args=args)
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        await self._numbers_script(keys=keys, args=args, client=pipe)
                    flat = [item for reply in await pipe.execute() for item in reply]
        return _number_reads(reads, flat)

    def read_numbers_blocking(self, reads: Sequence[ViewRead]) -> list[NumberRead]:
        calls = self._number_calls(reads)
        with _unavailable("read"):
            if len(calls) == 1:
                keys, args = calls[0]
                flat = self._sync_numbers_script(keys=keys, args=args)
            else:
                with self._sync.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        self._sync_numbers_script(keys=keys, args=args, client=pipe)
                    flat = [item for reply in pipe.execute() for item in reply]
        return _number_reads(reads, flat)

    async def close(self) -> None:
        await self._client.aclose()
        self._sync.close()

    # ------------------------------------------------------------------ helpers

    def _write_args(
        self, view: FeatureView, rows: Sequence[FeatureRow]
    ) -> tuple[list[str], list[str | bytes]]:
        keys: list[str] = []
        layout = _layout(view.features)
        args: list[str | bytes] = [layout.field]
        keep_s = view.ttl_s + self._grace_s
        for row in rows:
            keys.append(self.key(view.tenant, view.name, row.entity))
            args += (
                repr(float(row.event_ts)),
                str(math.ceil((row.event_ts + keep_s) * 1000)),
                orjson.dumps(row.values),
                layout.pack(row.values),
            )
        return keys, args

    def _keys(self, reads: Sequence[ViewRead]) -> list[str]:
        keys: list[str] = []
        for read in reads:
            base = f"{self._prefix}:{read.view.tenant}:{read.view.name}:"
            keys += [base + entity_key for entity_key in read.keys]
        return keys

    def _number_calls(self, reads: Sequence[ViewRead]) -> list[tuple[list[str], list[Any]]]:
        """The read-numbers script calls for ``reads``: (keys, args) each, at most
        ``READ_CHUNK`` keys per call (a read's keys may span calls)."""
        calls: list[tuple[list[str], list[Any]]] = []
        keys: list[str] = []
        segments: list[Any] = []
        count = 0
        for read in reads:
            base = f"{self._prefix}:{read.view.tenant}:{read.view.name}:"
            field = _layout(read.view.features).field
            start = 0
            while start < len(read.keys):
                if len(keys) == READ_CHUNK:
                    calls.append((keys, [count, *segments]))
                    keys, segments, count = [], [], 0
                taken = read.keys[start : start + READ_CHUNK - len(keys)]
                keys += [base + entity_key for entity_key in taken]
                segments += (len(taken), field)
                count += 1
                start += len(taken)
        if keys or not calls:
            calls.append((keys, [count, *segments]))
        return calls

    def _records(self, reads: Sequence[ViewRead], flat: list[Any]) -> list[list[Record | None]]:
        loads = orjson.loads
        records: list[list[Record | None]] = []
        at = 0
        for read in reads:
            end = at + 2 * len(read.keys)
            pairs = zip(flat[at:end:2], flat[at + 1 : end : 2], strict=True)
            records.append(
                [None if ts is None else Record(float(ts), loads(values)) for ts, values in pairs]
            )
            at = end
        return records


def _number_reads(reads: Sequence[ViewRead], flat: list[Any]) -> list[NumberRead]:
    """The script's flat reply (three items per key) as NumberRead per read."""
    result: list[NumberRead] = []
    at = 0
    for read in reads:
        layout = _layout(read.view.features)
        end = at + 3 * len(read.keys)
        stamps = [_NAN if ts is None else float(ts) for ts in flat[at:end:3]]
        blobs = flat[at + 1 : end : 3]
        for i, (blob, values) in enumerate(zip(blobs, flat[at + 2 : end : 3], strict=True)):
            if blob is None:
                # No record, or one another version of the view wrote: from its JSON.
                blobs[i] = layout.nothing if values is None else layout.pack(orjson.loads(values))
        packed = np.frombuffer(b"".join(blobs), dtype="<f4")
        matrix = packed.reshape(len(read.keys), len(layout.names))
        result.append(
            NumberRead(np.array(stamps, dtype=np.float64), matrix[:, layout.columns(read.features)])
        )
        at = end
    return result


class _Layout:
    """How a view's values are packed as numbers: its features in order, and the field that
    holds them (named by a hash of that order)."""

    def __init__(self, features: tuple[FeatureSpec, ...]) -> None:
        self.names = tuple(spec.name for spec in features)
        digest = hashlib.blake2b("\x1f".join(self.names).encode(), digest_size=6).hexdigest()
        self.field = f"n:{digest}"
        self.nothing = _NAN_BYTES * len(self.names)
        self._struct = struct.Struct(f"<{len(self.names)}f")
        self._index = {name: i for i, name in enumerate(self.names)}
        self._columns: dict[tuple[str, ...], np.ndarray] = {}

    def pack(self, values: Mapping[str, Any]) -> bytes:
        row = [_number(values.get(name)) for name in self.names]
        try:
            return self._struct.pack(*row)
        except OverflowError:  # beyond float32: numpy rounds to inf, as a join would
            return np.array(row, dtype=np.float64).astype("<f4").tobytes()

    def columns(self, features: tuple[str, ...]) -> np.ndarray:
        found = self._columns.get(features)
        if found is None:
            found = self._columns[features] = np.array(
                [self._index[name] for name in features], dtype=np.intp
            )
        return found


def _number(value: Any) -> float:
    return float(value) if type(value) in _NUMBER_TYPES else _NAN


def _layout(features: tuple[FeatureSpec, ...]) -> _Layout:
    """The layout of a view's features, cached by the tuple's identity (views are immutable
    and cached by the feature service, so this skips hashing every spec on every batch)."""
    found = _LAYOUTS.get(id(features))
    if found is None or found[0] is not features:
        if len(_LAYOUTS) >= 1024:
            _LAYOUTS.clear()
        found = _LAYOUTS[id(features)] = (features, _Layout(features))
    return found[1]


_LAYOUTS: dict[int, tuple[tuple[FeatureSpec, ...], _Layout]] = {}


_NAN = float("nan")
_NAN_BYTES = struct.pack("<f", _NAN)
_NUMBER_TYPES = (float, int, bool)


@contextmanager
def _unavailable(operation: str) -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        log.warning("feature_store_unavailable", operation=operation, error=repr(exc))
        raise FeatureStoreUnavailable(
            f"the online feature store (Redis) failed to {operation}: {type(exc).__name__}; "
            "retry later"
        ) from None
