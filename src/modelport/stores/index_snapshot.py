"""The snapshot format shared by the vector and the lexical index.

A snapshot is one byte string (or file), so it can go to the artifact store as is::

    b"MPIDX001"                      magic and format version
    8 bytes, little endian           length of the header
    header                           UTF-8 JSON: kind, tenant, stream position, counts, sections
    sections                         raw bytes, one after the other, in the header's order

The header's ``sections`` lists ``[name, length, sha256]``; :func:`unpack` checks every digest, so
a truncated or corrupted snapshot is refused instead of restored. Numpy arrays travel as ``.npy``
bytes (no pickle). The ``position`` is the change stream's id of the last message applied before
the snapshot: a replica restores the snapshot, then reads the stream from there.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ArtifactError

MAGIC = b"MPIDX001"


def pack(header: dict[str, Any], sections: dict[str, bytes]) -> bytes:
    listed = [
        [name, len(data), hashlib.sha256(data).hexdigest()] for name, data in sections.items()
    ]
    head = json.dumps({**header, "sections": listed}, separators=(",", ":")).encode()
    return b"".join([MAGIC, len(head).to_bytes(8, "little"), head, *sections.values()])


def unpack(data: bytes | memoryview) -> tuple[dict[str, Any], dict[str, bytes]]:
    view = memoryview(data)
    if bytes(view[:8]) != MAGIC:
        raise ArtifactError("not a modelport index snapshot (or one of another format version)")
    size = int.from_bytes(view[8:16], "little")
    header = json.loads(bytes(view[16 : 16 + size]))
    offset = 16 + size
    sections: dict[str, bytes] = {}
    for name, length, digest in header.pop("sections"):
        chunk = bytes(view[offset : offset + length])
        if len(chunk) != length or hashlib.sha256(chunk).hexdigest() != digest:
            raise ArtifactError(f"index snapshot section {name!r} is truncated or corrupted")
        sections[name] = chunk
        offset += length
    return header, sections


def array_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def bytes_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)  # type: ignore[no-any-return]


def write_file(path: Path, data: bytes) -> None:
    """Write beside, then rename: a reader never sees half a snapshot."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
