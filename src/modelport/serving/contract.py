"""Release contracts: interface compatibility between versions and golden examples.

Pure functions of signatures and arrays; the registry runs them before a version is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelport.errors import InvalidInput
from modelport.serving.codec import decode_request
from modelport.serving.signature import Signature, TensorSpec, validate_inputs


def incompatibilities(interface: Signature, candidate: Signature) -> list[str]:
    """Why ``candidate`` cannot stand in for ``interface`` (empty when it can): same input and
    output names, same datatypes, same ranks, and fixed dimensions that agree."""
    problems: list[str] = []
    for kind, old, new in (
        ("input", interface.inputs, candidate.inputs),
        ("output", interface.outputs, candidate.outputs),
    ):
        old_by_name = {s.name: s for s in old}
        new_by_name = {s.name: s for s in new}
        for name in sorted(old_by_name.keys() - new_by_name.keys()):
            problems.append(f"{kind} '{name}' is missing")
        for name in sorted(new_by_name.keys() - old_by_name.keys()):
            problems.append(f"{kind} '{name}' is new")
        for name in sorted(old_by_name.keys() & new_by_name.keys()):
            problems.extend(_spec_problems(kind, old_by_name[name], new_by_name[name]))
    return problems


def _spec_problems(kind: str, old: TensorSpec, new: TensorSpec) -> list[str]:
    if old.datatype != new.datatype:
        return [f"{kind} '{old.name}' changed datatype {old.datatype} -> {new.datatype}"]
    if len(old.shape) != len(new.shape):
        return [f"{kind} '{old.name}' changed rank {list(old.shape)} -> {list(new.shape)}"]
    for a, b in zip(old.shape, new.shape, strict=True):
        if a != -1 and b != -1 and a != b:
            return [f"{kind} '{old.name}' changed shape {list(old.shape)} -> {list(new.shape)}"]
    return []


@dataclass(frozen=True, slots=True)
class GoldenExample:
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    tolerance: float


def parse_golden(
    signature: Signature, raw: list[dict[str, Any]], model: str
) -> list[GoldenExample]:
    """Validate stored golden examples against a signature. Each is ``{"request": <OIP infer
    body>, "expected": {output: data}, "tolerance": float}``."""
    examples: list[GoldenExample] = []
    outputs = {s.name: s for s in signature.outputs}
    for index, item in enumerate(raw):
        where = f"golden example {index}"
        # Examples come straight from a request body: a wrong shape is the sender's mistake.
        if not (
            isinstance(item, dict) and "request" in item and isinstance(item.get("expected"), dict)
        ):
            raise InvalidInput(
                f'{where}: must be {{"request": <OIP infer body>, "expected": {{output: data}}, '
                '"tolerance": number}'
            )
        try:
            tolerance = float(item.get("tolerance", 1e-4))
        except (TypeError, ValueError):
            raise InvalidInput(f"{where}: tolerance must be a number") from None
        if not tolerance >= 0:
            raise InvalidInput(f"{where}: tolerance must be >= 0")
        try:
            inputs = validate_inputs(
                signature, decode_request(orjson.dumps(item["request"])).inputs, model
            )
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc.message}") from None
        expected: dict[str, np.ndarray] = {}
        for name, data in item["expected"].items():
            if name not in outputs:
                raise InvalidInput(f"{where}: model '{model}' has no output '{name}'")
            try:
                expected[name] = np.asarray(data, dtype=np.float64)
            except (TypeError, ValueError):
                raise InvalidInput(f"{where}: expected '{name}' must be numbers") from None
        examples.append(GoldenExample(inputs, expected, tolerance))
    return examples


def golden_failures(
    examples: list[GoldenExample], outputs: list[dict[str, np.ndarray]]
) -> list[str]:
    """Which examples the version's ``outputs`` (one dict per example) fail, and by how much."""
    failures: list[str] = []
    for index, (example, got) in enumerate(zip(examples, outputs, strict=True)):
        for name, want in example.expected.items():
            have = got.get(name)
            if have is None:
                failures.append(f"example {index}: no output '{name}'")
                continue
            have64 = np.asarray(have, dtype=np.float64)
            if have64.size != want.size:
                failures.append(
                    f"example {index}: output '{name}' has {have64.size} values, "
                    f"expected {want.size}"
                )
                continue
            diff = (
                float(np.max(np.abs(have64.reshape(-1) - want.reshape(-1)))) if want.size else 0.0
            )
            if not diff <= example.tolerance:
                failures.append(
                    f"example {index}: output '{name}' differs by {diff:.3g} "
                    f"(tolerance {example.tolerance:g})"
                )
    return failures
