"""Response cache keys: a digest of who asks which version what.

The digest covers a canonical encoding, so equal requests hash equally in every process and on
every replica (the Redis tier is shared): inputs in name order, each as its OIP datatype, shape
and little-endian C-order bytes, whatever the array's memory layout or byte order. BYTES
elements are length-prefixed, so ``["ab", "c"]`` and ``["a", "bc"]`` differ. Every variable-size
part carries its length, so no two different requests share an encoding. The tenant, model and
version lead the encoding: another tenant, model or version (a new version in particular) never
finds an entry of this one.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from collections.abc import Mapping

import numpy as np

from modelport.serving.datatypes import NUMPY_DTYPES, datatype_of

#: Bumped whenever the encoding changes, so old Redis entries are never read by new code.
_PERSON = b"modelport-ck2"
_DIGEST_BYTES = 20
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEAD = struct.Struct("<I")
#: One byte per datatype (the OIP names differ in length).
_DATATYPES = {name: bytes([code]) for code, name in enumerate(sorted(NUMPY_DTYPES))}
_LITTLE = frozenset({"<", "|", "="} if sys.byteorder == "little" else {"<", "|"})


def cache_key(
    tenant: str,
    model: str,
    version: str,
    arrays: Mapping[str, np.ndarray],
    extra: bytes = b"",
) -> bytes:
    """The digest that identifies one request's answer.

    ``extra`` is anything else the answer depends on (the feature values joined into the
    request, for example); it is part of the encoding like the inputs."""
    # One buffer, one update: hashing is cheap, a dozen small update calls were not.
    parts: list[bytes | memoryview] = []
    add = parts.append
    for part in (tenant, model, version):
        raw = part.encode()
        add(_U32.pack(len(raw)))
        add(raw)
    add(_U32.pack(len(arrays)))
    for name in sorted(arrays):
        array = arrays[name]
        raw_name = name.encode()
        datatype = datatype_of(array)
        add(_HEAD.pack(len(raw_name)))
        add(raw_name)
        add(_DATATYPES[datatype])
        add(struct.pack(f"<B{array.ndim}Q", array.ndim, *array.shape))
        if datatype == "BYTES":
            for item in array.flat:
                raw = item if isinstance(item, bytes) else str(item).encode()
                add(_U64.pack(len(raw)))
                add(raw)
        else:
            add(_U64.pack(array.nbytes))
            add(_canonical(array).data)
    add(_U64.pack(len(extra)))
    add(extra)
    return hashlib.blake2b(b"".join(parts), digest_size=_DIGEST_BYTES, person=_PERSON).digest()


def _canonical(array: np.ndarray) -> np.ndarray:
    """``array`` as little-endian C-order memory (itself, when it already is)."""
    if array.flags.c_contiguous and array.dtype.byteorder in _LITTLE:
        return array
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
