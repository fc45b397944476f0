"""The largest request body a version can have a use for, from its signature and batching.

The edge reads no more than this for an infer call (``InferenceService.body_limit``), so a
body far beyond anything the model could take is refused before it is read or parsed, however
high the server-wide ``MODELPORT_MAX_REQUEST_BYTES``.
"""

from __future__ import annotations

from modelport.serving.config import VersionConfig
from modelport.serving.signature import Signature

#: Room for the envelope: tensor names, shapes, parameters, the request id, whitespace.
ENVELOPE_BYTES = 64 * 1024
#: The longest a JSON number can reasonably be written (``-1.2345678901234567e-308,``).
JSON_NUMBER_BYTES = 32
#: The most one BYTES element (a text) may take, escaped as JSON.
BYTES_ELEMENT_BYTES = 64 * 1024


def request_size_limit(signature: Signature, config: VersionConfig) -> int | None:
    """Bytes of the largest JSON request the version accepts; None when a dynamic dimension
    besides the rows leaves it unbounded (the server-wide limit then applies)."""
    batching = config.batching
    # A request may carry up to max_batch_size rows (with batching off, a queue's worth).
    rows = (batching.max_batch_size or batching.max_queue_size) if signature.batchable else 1
    total = ENVELOPE_BYTES
    for spec in signature.inputs:
        dims = spec.shape[1:] if signature.batchable else spec.shape
        elements = 1
        for dim in dims:
            if dim < 0:
                return None
            elements *= dim
        per_element = BYTES_ELEMENT_BYTES if spec.datatype == "BYTES" else JSON_NUMBER_BYTES
        total += rows * elements * per_element
    return total
