"""Warmup requests: the configured ones, or one generated from the signature."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from modelport.serving.codec import decode_request
from modelport.serving.datatypes import NUMPY_DTYPES
from modelport.serving.signature import Signature, validate_inputs

Arrays = dict[str, np.ndarray]


def warmup_requests(
    signature: Signature, configured: list[dict[str, Any]], model: str
) -> list[Arrays]:
    if configured:
        return [
            validate_inputs(signature, decode_request(orjson.dumps(body)).inputs, model)
            for body in configured
        ]
    return [generated_request(signature)]


def generated_request(signature: Signature) -> Arrays:
    """One row: zeros for numbers, a short text for BYTES; every dynamic dimension is 1."""
    arrays: Arrays = {}
    for spec in signature.inputs:
        shape = tuple(1 if d == -1 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            array = np.empty(shape, dtype=object)
            array.fill(b"modelport warmup")
        else:
            array = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
        arrays[spec.name] = array
    return arrays
