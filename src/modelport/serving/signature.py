"""Model signatures and the validation of request tensors against them, before any queueing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.errors import InvalidInput
from modelport.serving.codec import InputTensor


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    """Dimensions; -1 marks a dynamic one."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TensorSpec:
        return cls(str(raw["name"]), str(raw["datatype"]), tuple(int(d) for d in raw["shape"]))


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batchable(self) -> bool:
        """Every input and output has a dynamic leading dimension that rows can be stacked on."""
        specs = (*self.inputs, *self.outputs)
        return bool(specs) and all(s.shape and s.shape[0] == -1 for s in specs)

    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(s) for s in raw["inputs"]),
            tuple(TensorSpec.from_dict(s) for s in raw["outputs"]),
        )


def validate_inputs(
    signature: Signature, tensors: Sequence[InputTensor], model: str
) -> dict[str, np.ndarray]:
    """Check names, datatypes and shapes against the signature; return arrays by input name.

    For a batchable model every input must carry the same number of rows (leading dimension)."""
    specs = {s.name: s for s in signature.inputs}
    arrays: dict[str, np.ndarray] = {}
    rows: int | None = None
    for tensor in tensors:
        spec = specs.get(tensor.name)
        if spec is None:
            raise InvalidInput(
                f"model '{model}' has no input '{tensor.name}'; its inputs are "
                f"{', '.join(sorted(specs))}"
            )
        if tensor.datatype != spec.datatype:
            raise InvalidInput(
                f"input '{tensor.name}' of model '{model}' is {spec.datatype}, "
                f"not {tensor.datatype}"
            )
        if not _shape_matches(spec.shape, tensor.shape):
            raise InvalidInput(
                f"input '{tensor.name}' of model '{model}' has shape {list(tensor.shape)}; "
                f"expected {list(spec.shape)} (-1 is any size)"
            )
        if signature.batchable:
            if rows is not None and tensor.shape[0] != rows:
                raise InvalidInput(
                    f"inputs of model '{model}' disagree on the number of rows "
                    f"({rows} and {tensor.shape[0]})"
                )
            rows = tensor.shape[0]
        arrays[tensor.name] = tensor.array
    missing = [name for name in specs if name not in arrays]
    if missing:
        raise InvalidInput(f"model '{model}' needs input(s) {', '.join(missing)}")
    if rows == 0:
        raise InvalidInput(f"request to model '{model}' has no rows")
    return arrays


def _shape_matches(expected: tuple[int, ...], got: tuple[int, ...]) -> bool:
    return len(expected) == len(got) and all(e in (-1, g) for e, g in zip(expected, got, strict=True))
