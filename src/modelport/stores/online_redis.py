"""The production online store: latest values per entity in Redis, shared by every replica.

Key layout: one hash per tenant, view and entity key::

    {prefix}:{tenant}:{view}:{entity_key}      (prefix ``mp:f`` by default)
        ts   event time, seconds since the epoch, as Python's repr of the float
        v    the values: one JSON object, feature -> value (orjson)

    {prefix}:{tenant}:{view}/n:{entity_key}    a string: the same values as numbers, for the
        feature join: a 6-byte hash naming the view's list of features, the event time
        (float64) and one float32 per feature in the view's order (NaN where the row has no
        value or the feature is a string); little-endian

Tenant and view names cannot contain ``:`` or ``/``, so the keys parse unambiguously; the
entity key is everything after the third separator. One JSON blob per entity keeps a read at
two fields per key, whatever the number of features; the numbers let the feature join read a
whole batch with one ``MGET`` and fill its tensors without decoding JSON.

Writes go through one Lua script per chunk of rows: a row whose stored event time is newer is
skipped (stale); otherwise ``ts``, ``v`` and the numbers are replaced and both keys expire at
``event_ts + ttl + grace`` (``PEXPIREAT``, ``SET ... PXAT``), so a value past its TTL still reads
as ``expired`` for the grace period before it reads as ``missing``. The join reads a key whose
numbers are absent or were packed for another list of features (another version of the view
wrote the row, or it predates the numbers) from the hash, in a second round trip for those keys
only; so does a key with no record at all.

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
from redis.asyncio.connection import AbstractConnection as AsyncConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
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
from modelport.stores.online_records import (
    DEFAULT_GRACE_S,
    Record,
    assemble,
    number,
    numbers,
    over_cap,
)

log = structlog.get_logger("modelport.features")

DEFAULT_PREFIX = "mp:f"

#: Rows per script call: bounds how long one call holds Redis (about a millisecond).
CHUNK_ROWS = 1000

# KEYS: the tenant's sizes hash (record key -> bytes, and '#total') and expiry sorted set
# (record key -> expiry ms), then two per row, the hash and the numbers key. ARGV: now (ms since
# the epoch), the tenant's cap in bytes (-1: none), then five per row: event ts, expiry (ms),
# values (JSON), numbers (packed), the record's size. An equal event time wins, as in the
# memory backend (see online_records.wins). Records that expired leave the tenant's total
# first (up to 1000 per call). When the winners would take the total past the cap, nothing is
# written and the script returns {-1, total, adding}.
_WRITE = """
local sizes, expiry = KEYS[1], KEYS[2]
local now, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local total = tonumber(redis.call('HGET', sizes, '#total') or '0')
local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 1000)
for _, k in ipairs(gone) do
  total = total - tonumber(redis.call('HGET', sizes, k) or '0')
  redis.call('HDEL', sizes, k)
  redis.call('ZREM', expiry, k)
end
local rows = (#KEYS - 2) / 2
local winner, seen_ts, seen_size = {}, {}, {}
local written, stale, adding = 0, 0, 0
for i = 1, rows do
  local key = KEYS[2 * i + 1]
  local at = 3 + 5 * (i - 1)
  local ts = tonumber(ARGV[at])
  local stored = seen_ts[key] or tonumber(redis.call('HGET', key, 'ts') or nil)
  if stored and stored > ts then
    stale = stale + 1
  else
    winner[i] = true
    local size = tonumber(ARGV[at + 4])
    adding = adding + size - (seen_size[key] or tonumber(redis.call('HGET', sizes, key) or '0'))
    seen_ts[key], seen_size[key] = ts, size
    written = written + 1
  end
end
if cap >= 0 and adding > 0 and total + adding > cap then
  redis.call('HSET', sizes, '#total', total)
  return {-1, total, adding}
end
for i = 1, rows do
  if winner[i] then
    local key, numbers = KEYS[2 * i + 1], KEYS[2 * i + 2]
    local at = 3 + 5 * (i - 1)
    redis.call('HSET', key, 'ts', ARGV[at], 'v', ARGV[at + 2])
    redis.call('PEXPIREAT', key, ARGV[at + 1])
    redis.call('SET', numbers, ARGV[at + 3], 'PXAT', ARGV[at + 1])
    redis.call('HSET', sizes, key, ARGV[at + 4])
    redis.call('ZADD', expiry, ARGV[at + 1], key)
  end
end
redis.call('HSET', sizes, '#total', total + adding)
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


class RedisOnlineStore:
    def __init__(
        self,
        client: AsyncRedis,
        sync_client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        grace_s: float = DEFAULT_GRACE_S,
        max_tenant_bytes: int | None = None,
    ) -> None:
        """``max_tenant_bytes``: the most a tenant may store (``stored_bytes`` per record)."""
        self._max_tenant_bytes = max_tenant_bytes
        self._client = client
        self._sync = sync_client
        self._prefix = prefix
        self._grace_s = grace_s
        self._script = client.register_script(_WRITE)
        self._read_script = client.register_script(_READ)
        self._sync_read_script = sync_client.register_script(_READ)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_s: float = 0.5,
        prefix: str = DEFAULT_PREFIX,
        grace_s: float = DEFAULT_GRACE_S,
        max_tenant_bytes: int | None = None,
    ) -> RedisOnlineStore:
        """Both clients, each with its own pool, every call bounded by ``timeout_s``."""
        bounds: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        }
        return cls(
            _packing_in_c(AsyncRedis.from_url(url, retry=AsyncRetry(NoBackoff(), 1), **bounds)),
            redis.Redis.from_url(url, retry=Retry(NoBackoff(), 1), **bounds),
            prefix=prefix,
            grace_s=grace_s,
            max_tenant_bytes=max_tenant_bytes,
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
                reply = await self._script(keys=keys, args=args)
                if int(reply[0]) < 0:
                    cap = self._max_tenant_bytes
                    assert cap is not None  # noqa: S101 - only a cap refuses a write
                    raise over_cap(view.tenant, int(reply[1]), int(reply[2]), cap, start)
                written += int(reply[0])
                stale += int(reply[1])
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
        keys = self._keys(reads, _NUMBERS)
        with _unavailable("read"):
            if len(keys) <= READ_CHUNK:
                blobs = await self._client.mget(keys) if keys else []
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for start in range(0, len(keys), READ_CHUNK):
                        pipe.mget(keys[start : start + READ_CHUNK])
                    blobs = [blob for reply in await pipe.execute() for blob in reply]
        parsed = _Numbers(reads, blobs)
        if parsed.gaps:
            gaps = parsed.gap_reads()
            parsed.fill(gaps, await self.read_records(gaps))
        return parsed.result()

    def read_numbers_blocking(self, reads: Sequence[ViewRead]) -> list[NumberRead]:
        keys = self._keys(reads, _NUMBERS)
        with _unavailable("read"):
            if len(keys) <= READ_CHUNK:
                blobs = self._sync.mget(keys) if keys else []
            else:
                with self._sync.pipeline(transaction=False) as pipe:
                    for start in range(0, len(keys), READ_CHUNK):
                        pipe.mget(keys[start : start + READ_CHUNK])
                    blobs = [blob for reply in pipe.execute() for blob in reply]
        parsed = _Numbers(reads, blobs)
        if parsed.gaps:
            gaps = parsed.gap_reads()
            parsed.fill(gaps, self.read_records_blocking(gaps))
        return parsed.result()

    async def close(self) -> None:
        await self._client.aclose()
        self._sync.close()

    # ------------------------------------------------------------------ helpers

    def numbers_key(self, tenant: str, view: str, entity_key: str) -> str:
        return self.key(tenant, view + _NUMBERS, entity_key)

    def _write_args(
        self, view: FeatureView, rows: Sequence[FeatureRow]
    ) -> tuple[list[str], list[str | bytes]]:
        usage = f"{self._prefix}:{view.tenant}{_USAGE}"
        keys: list[str] = [usage, usage + "e"]
        cap = self._max_tenant_bytes
        args: list[str | bytes] = [str(int(time.time() * 1000)), str(-1 if cap is None else cap)]
        layout = _layout(view.features)
        keep_s = view.ttl_s + self._grace_s
        for row in rows:
            keys += (
                self.key(view.tenant, view.name, row.entity),
                self.numbers_key(view.tenant, view.name, row.entity),
            )
            values = orjson.dumps(row.values)
            args += (
                repr(float(row.event_ts)),
                str(math.ceil((row.event_ts + keep_s) * 1000)),
                values,
                layout.pack(float(row.event_ts), row.values),
                str(len(row.entity.encode()) + len(values)),
            )
        return keys, args

    def _keys(self, reads: Sequence[ViewRead], kind: str = "") -> list[str]:
        """Every read's keys, in order: the hashes, or with ``kind=_NUMBERS`` the numbers."""
        keys: list[str] = []
        for read in reads:
            base = self.key(read.view.tenant, read.view.name + kind, "")
            keys += [base + entity_key for entity_key in read.keys]
        return keys

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


class _Numbers:
    """The join's read from the numbers keys (``MGET`` replies aligned with the reads' keys):
    the keys whose numbers are usable go straight into arrays; the others (``gaps``: no
    numbers key, or numbers packed for another list of features) are filled from their
    records."""

    def __init__(self, reads: Sequence[ViewRead], blobs: Sequence[Any]) -> None:
        self._reads = reads
        self.gaps: list[list[int]] = []
        self._stamps: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        at = 0
        for read in reads:
            layout = _layout(read.view.features)
            mine = blobs[at : at + len(read.keys)]
            at += len(read.keys)
            # A blob is usable when it was packed for this list of features (its size and
            # leading hash say so): inline, as this runs for every key of every batch.
            size, digest, nothing = layout.dtype.itemsize, layout.digest, layout.nothing
            usable = [
                blob if blob is not None and len(blob) == size and blob[:6] == digest else nothing
                for blob in mine
            ]
            self.gaps.append([i for i, blob in enumerate(usable) if blob is layout.nothing])
            packed = np.frombuffer(b"".join(usable), dtype=layout.dtype)
            self._stamps.append(packed["ts"].astype(np.float64))
            self._values.append(packed["values"][:, layout.columns(read.features)])
        if not any(self.gaps):
            self.gaps = []

    def gap_reads(self) -> list[ViewRead]:
        return [
            ViewRead(read.view, read.features, tuple(read.keys[i] for i in gaps))
            for read, gaps in zip(self._reads, self.gaps, strict=True)
        ]

    def fill(self, reads: Sequence[ViewRead], records: Sequence[Sequence[Record | None]]) -> None:
        """The gaps' numbers, from the records read for ``reads`` (``gap_reads()``)."""
        for gaps, found, stamps, values in zip(
            self.gaps,
            numbers(reads, records),
            self._stamps,
            self._values,
            strict=True,
        ):
            stamps[gaps] = found.event_ts
            values[gaps] = found.values

    def result(self) -> list[NumberRead]:
        return [NumberRead(*pair) for pair in zip(self._stamps, self._values, strict=True)]


class _Layout:
    """How the numbers of a view's rows are packed: its features in order, named by a hash."""

    def __init__(self, features: tuple[FeatureSpec, ...]) -> None:
        self.names = tuple(spec.name for spec in features)
        self.digest = hashlib.blake2b("\x1f".join(self.names).encode(), digest_size=6).digest()
        self.dtype = np.dtype(
            [("digest", "V6"), ("ts", "<f8"), ("values", "<f4", (len(self.names),))]
        )
        self._struct = struct.Struct(f"<6sd{len(self.names)}f")
        self.nothing = self._struct.pack(self.digest, math.nan, *([math.nan] * len(self.names)))
        self._index = {name: i for i, name in enumerate(self.names)}
        self._columns: dict[tuple[str, ...], np.ndarray] = {}

    def pack(self, event_ts: float, values: Mapping[str, Any]) -> bytes:
        row = [number(values.get(name)) for name in self.names]
        try:
            return self._struct.pack(self.digest, event_ts, *row)
        except OverflowError:  # beyond float32: inf, as the tensor would hold it anyway
            with np.errstate(over="ignore"):
                numbers = np.array(row, dtype=np.float64).astype("<f4").tobytes()
            return self.digest + struct.pack("<d", event_ts) + numbers

    def columns(self, features: tuple[str, ...]) -> np.ndarray:
        found = self._columns.get(features)
        if found is None:
            found = self._columns[features] = np.array(
                [self._index[name] for name in features], dtype=np.intp
            )
        return found


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

#: Appended to the view's name in the numbers keys (``{view}/n``): view names cannot hold ``/``.
_NUMBERS = "/n"
#: Appended to the tenant in its storage accounting keys (``{tenant}/usage``, ``…/usagee``).
_USAGE = "/usage"


class _HiredisPacking(AsyncConnection):
    """An asyncio connection that packs commands with hiredis, as redis-py's blocking
    connections do. The asyncio connection packs in Python, joining the growing buffer once per
    argument: 0.5-0.8 ms for a read of 200 keys, more than Redis takes to answer it."""

    _serializer = HiredisRespSerializer()  # type: ignore[no-untyped-call]  # redis ships this class unannotated

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


def _packing_in_c(client: AsyncRedis) -> AsyncRedis:
    """``client`` with its pool's connections packing commands with hiredis (any connection
    class: TCP, TLS or a Unix socket)."""
    pool = client.connection_pool
    base = pool.connection_class
    if not issubclass(base, _HiredisPacking):
        pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    return client


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
