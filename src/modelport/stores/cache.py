"""Response cache tiers: where the answers of cache-enabled versions are kept.

A tier maps ``(tenant, key digest)`` to a model's outputs for a time to live. Two backends
implement :class:`CacheTier`:

- :class:`MemoryCacheTier`: this process only; an LRU bounded in bytes with per-entry expiry.
  It keeps read-only copies of the arrays, so a hit costs no decoding. Event loop thread only.
- :class:`RedisCacheTier`: shared by replicas. Values are a compact binary encoding (a small
  header, then each output's raw bytes) that carries the entry's expiry time, so a replica that
  copies an entry into its memory keeps it only as long as it has left. A circuit breaker skips
  Redis for a growing back-off after a failure: Redis down costs no latency, and the tier comes
  back by itself once a probe succeeds.

What ``get`` returns is shared between answers and read-only.
"""

from __future__ import annotations

import math
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from modelport.stores.breaker import Breaker, Call

log = structlog.get_logger("modelport.cache")

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Cached:
    outputs: Outputs
    ttl_s: float
    """Seconds the entry has left."""


class CacheTier(Protocol):
    async def get(self, tenant: str, key: bytes) -> Cached | None: ...

    async def put(
        self, tenant: str, key: bytes, outputs: Mapping[str, np.ndarray], ttl_s: float
    ) -> None: ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------- memory

#: Bookkeeping per entry beyond the arrays' data (tuples, dict slot, key, array headers).
_ENTRY_OVERHEAD = 240
_ARRAY_OVERHEAD = 112
_OBJECT_OVERHEAD = 40

#: ``(tenant, expires, size, ((name, array), ...))``. Plain tuples of strings, numbers and
#: arrays on purpose: the garbage collector stops tracking such a tuple after its first pass,
#: so a cache of a million answers adds nothing to the collector's pauses. An object per entry
#: (or a dict of outputs) stays tracked: 200,000 answers made each full collection take 80 ms.
_Entry = tuple[str, float, int, tuple[tuple[str, np.ndarray], ...]]


class MemoryCacheTier:
    """An LRU bounded by the bytes its entries hold, not by their number."""

    def __init__(self, max_bytes: int, *, on_evict: Callable[[str], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        """Called with the tenant of every entry pushed out to make room."""
        self.bytes = 0
        self.evictions = 0
        self.expirations = 0
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._tenant_bytes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def tenant_bytes(self, tenant: str) -> int:
        return self._tenant_bytes.get(tenant, 0)

    def lookup(self, tenant: str, key: bytes) -> Outputs | None:
        """The hot path: a plain function, no coroutine."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != tenant:
            return None
        if entry[1] <= time.monotonic():
            self._drop(key, entry)
            self.expirations += 1
            return None
        self._entries.move_to_end(key)
        return dict(entry[3])

    def store(
        self, tenant: str, key: bytes, outputs: Mapping[str, np.ndarray], ttl_s: float
    ) -> None:
        old = self._entries.get(key)
        if old is not None:
            self._drop(key, old)
        pairs = tuple((name, _frozen(array)) for name, array in outputs.items())
        size = _ENTRY_OVERHEAD + len(key) + sum(_size(a) for _, a in pairs)
        if size > self.max_bytes or ttl_s <= 0:
            return
        self._entries[key] = (tenant, time.monotonic() + ttl_s, size, pairs)
        self.bytes += size
        self._tenant_bytes[tenant] = self._tenant_bytes.get(tenant, 0) + size
        if self.bytes > self.max_bytes:
            self._make_room()

    def _make_room(self) -> None:
        now = time.monotonic()
        while self.bytes > self.max_bytes:
            _, entry = self._entries.popitem(last=False)
            self._account(entry)
            if entry[1] <= now:
                self.expirations += 1
                continue
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(entry[0])

    def _drop(self, key: bytes, entry: _Entry) -> None:
        del self._entries[key]
        self._account(entry)

    def _account(self, entry: _Entry) -> None:
        tenant, _, size, _ = entry
        self.bytes -= size
        left = self._tenant_bytes[tenant] - size
        if left:
            self._tenant_bytes[tenant] = left
        else:
            del self._tenant_bytes[tenant]

    async def get(self, tenant: str, key: bytes) -> Cached | None:
        outputs = self.lookup(tenant, key)
        if outputs is None:
            return None
        return Cached(outputs, self._entries[key][1] - time.monotonic())

    async def put(
        self, tenant: str, key: bytes, outputs: Mapping[str, np.ndarray], ttl_s: float
    ) -> None:
        self.store(tenant, key, outputs, ttl_s)

    async def close(self) -> None:
        self._entries.clear()
        self._tenant_bytes.clear()
        self.bytes = 0


def _frozen(array: np.ndarray) -> np.ndarray:
    # A copy owns its memory: a row sliced out of a batch would keep the whole batch alive.
    # Little-endian, BYTES elements as bytes: what the Redis tier gives back, so both tiers
    # answer alike.
    if array.dtype.kind in "OSU":
        copy = np.empty(array.shape, dtype=object)
        copy.flat[:] = [x if isinstance(x, bytes) else str(x).encode() for x in array.flat]
    else:
        copy = np.array(array, dtype=array.dtype.newbyteorder("<"), copy=True, order="C")
    copy.flags.writeable = False
    return copy


def _size(array: np.ndarray) -> int:
    if array.dtype.kind != "O":
        return _ARRAY_OVERHEAD + array.nbytes
    return (
        _ARRAY_OVERHEAD
        + sum(_OBJECT_OVERHEAD + (len(x) if isinstance(x, bytes | str) else 0) for x in array.flat)
        + array.nbytes
    )


# --------------------------------------------------------------------------- encoding


class CorruptEntry(ValueError):
    """A stored value that is not a cache entry of this encoding."""


#: ``magic, expires_at (seconds since the epoch), outputs``
_HEAD = struct.Struct("<4sdH")
_MAGIC = b"MPc1"
#: ``name length, datatype code, dimensions``
_OUT = struct.Struct("<HBB")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DTYPES: tuple[np.dtype[Any], ...] = tuple(
    np.dtype(d)
    for d in ("?", "<u1", "<u2", "<u4", "<u8", "<i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8")
)
_CODES = {dtype: code for code, dtype in enumerate(_DTYPES)}
_BYTES_CODE = 255


def encode_outputs(outputs: Mapping[str, np.ndarray], expires_at: float) -> bytes:
    """``outputs`` as one value; numeric arrays little-endian C order, BYTES elements each
    behind a 4-byte length. Raises ``TypeError`` for an array no OIP datatype carries."""
    parts: list[Any] = [_HEAD.pack(_MAGIC, expires_at, len(outputs))]
    for name, array in outputs.items():
        raw_name = name.encode()
        kind = array.dtype.kind
        if kind in "OSU":
            code = _BYTES_CODE
            items = [x if isinstance(x, bytes) else str(x).encode() for x in array.flat]
            payload: Any = b"".join(b for x in items for b in (_U32.pack(len(x)), x))
        else:
            dtype = array.dtype.newbyteorder("<")
            code = _CODES.get(dtype, -1)
            if code < 0:
                raise TypeError(f"output '{name}' has dtype {array.dtype}, which cannot be cached")
            payload = np.ascontiguousarray(array, dtype=dtype).data
        parts.append(_OUT.pack(len(raw_name), code, array.ndim))
        parts.append(raw_name)
        parts.append(b"".join(_U64.pack(d) for d in array.shape))
        parts.append(_U64.pack(len(payload) if code == _BYTES_CODE else payload.nbytes))
        parts.append(payload)
    return b"".join(parts)


def decode_outputs(blob: bytes) -> tuple[Outputs, float]:
    """The outputs and their expiry time (seconds since the epoch); arrays are read-only
    views of ``blob``."""
    try:
        magic, expires_at, count = _HEAD.unpack_from(blob, 0)
        if magic != _MAGIC:
            raise CorruptEntry("not a modelport cache entry")
        pos = _HEAD.size
        outputs: Outputs = {}
        for _ in range(count):
            name_len, code, ndim = _OUT.unpack_from(blob, pos)
            pos += _OUT.size
            name = blob[pos : pos + name_len].decode()
            pos += name_len
            shape = struct.unpack_from(f"<{ndim}Q", blob, pos)
            pos += 8 * ndim
            (size,) = _U64.unpack_from(blob, pos)
            pos += 8
            if pos + size > len(blob):
                raise CorruptEntry("an output overruns the entry")
            outputs[name] = _decode_array(blob, pos, size, code, shape)
            pos += size
        if pos != len(blob):
            raise CorruptEntry("trailing bytes after the last output")
    except (struct.error, UnicodeDecodeError, ValueError, IndexError) as exc:
        if isinstance(exc, CorruptEntry):
            raise
        raise CorruptEntry(str(exc)) from None
    return outputs, expires_at


def _decode_array(blob: bytes, pos: int, size: int, code: int, shape: tuple[int, ...]) -> Any:
    count = math.prod(shape)
    if code == _BYTES_CODE:
        out = np.empty(count, dtype=object)
        end, i = pos + size, 0
        while pos < end:
            (n,) = _U32.unpack_from(blob, pos)
            pos += 4
            if i >= count or pos + n > end:
                raise CorruptEntry("BYTES elements do not match the shape")
            out[i] = blob[pos : pos + n]
            pos += n
            i += 1
        if i != count:
            raise CorruptEntry("BYTES elements do not match the shape")
        out.flags.writeable = False
        return out.reshape(shape)
    dtype = _DTYPES[code]
    if size != count * dtype.itemsize:
        raise CorruptEntry("an output's size does not match its shape")
    if count == 0:
        empty = np.empty(shape, dtype=dtype)
        empty.flags.writeable = False
        return empty
    return np.frombuffer(blob, dtype=dtype, count=count, offset=pos).reshape(shape)


# --------------------------------------------------------------------------- redis


class RedisCacheTier:
    """Entries at ``{namespace}:{tenant}:{hex digest}`` with a PX expiry.

    After a failed command the tier is skipped (``get`` misses, ``put`` does nothing) for
    ``backoff_min_s``, doubling up to ``backoff_max_s`` while probes keep failing; one request
    at a time probes. Give the client short socket timeouts and no retries (``from_url`` does):
    a slow Redis must fail fast to be skipped."""

    def __init__(
        self,
        client: Redis,
        *,
        namespace: str = "mp:c",
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 10.0,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._prefix = namespace + ":"
        self.on_error = on_error
        """Called once per failed command or unreadable entry."""
        self.errors = 0
        self._breaker = Breaker(backoff_min_s, backoff_max_s)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.05, **kwargs: Any) -> RedisCacheTier:
        client = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, **kwargs)

    @property
    def available(self) -> bool:
        """False while the breaker skips Redis."""
        return self._breaker.available

    def _key(self, tenant: str, key: bytes) -> str:
        return f"{self._prefix}{tenant}:{key.hex()}"

    async def get(self, tenant: str, key: bytes) -> Cached | None:
        call = self._breaker.enter()
        if call is Call.SKIP:
            return None
        ok = False
        try:
            blob = await self._client.get(self._key(tenant, key))
            ok = True
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        finally:
            self._leave(call, ok)
        if blob is None:
            return None
        try:
            if not isinstance(blob, bytes):
                raise CorruptEntry("the client decodes responses; give it decode_responses=False")
            outputs, expires_at = decode_outputs(blob)
        except CorruptEntry:
            self._count_error()
            return None
        left = expires_at - time.time()
        return Cached(outputs, left) if left > 0 else None

    async def put(
        self, tenant: str, key: bytes, outputs: Mapping[str, np.ndarray], ttl_s: float
    ) -> None:
        call = self._breaker.enter()
        if call is Call.SKIP:
            return
        ok = False
        try:
            blob = encode_outputs(outputs, time.time() + ttl_s)
            await self._client.set(self._key(tenant, key), blob, px=max(1, round(ttl_s * 1000)))
            ok = True
        except (TypeError, struct.error):
            self._count_error()  # not Redis's fault: this answer cannot be encoded, so not shared
        except (RedisError, OSError) as exc:
            self._failed(exc)
        finally:
            self._leave(call, ok)

    async def close(self) -> None:
        await self._client.aclose()

    def _leave(self, call: Call, ok: bool) -> None:
        if self._breaker.leave(call, ok):
            log.info("cache_redis_recovered")

    def _failed(self, exc: BaseException) -> None:
        self._count_error()
        backoff = self._breaker.failed()
        if backoff is not None:
            log.warning("cache_redis_unavailable", error=repr(exc), retry_in_s=backoff)

    def _count_error(self) -> None:
        self.errors += 1
        if self.on_error is not None:
            self.on_error()
