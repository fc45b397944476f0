"""Model signatures and the validation of request tensors against them, before any queueing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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
    # Derived once: the request path reads them for every request.
    batchable: bool = field(init=False, compare=False)
    """Every input and output has a dynamic leading dimension that rows can be stacked on."""
    input_specs: dict[str, TensorSpec] = field(init=False, compare=False, repr=False)
    output_names: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        specs = (*self.inputs, *self.outputs)
        batchable = bool(specs) and all(s.shape and s.shape[0] == -1 for s in specs)
        object.__setattr__(self, "batchable", batchable)
        object.__setattr__(self, "input_specs", {s.name: s for s in self.inputs})
        object.__setattr__(self, "output_names", tuple(o.name for o in self.outputs))

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
    specs = signature.input_specs
    batchable = signature.batchable
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
        if spec.shape != tensor.shape and not _shape_matches(spec.shape, tensor.shape):
            raise InvalidInput(
                f"input '{tensor.name}' of model '{model}' has shape {list(tensor.shape)}; "
                f"expected {list(spec.shape)} (-1 is any size)"
            )
        if batchable:
            if rows is not None and tensor.shape[0] != rows:
                raise InvalidInput(
                    f"inputs of model '{model}' disagree on the number of rows "
                    f"({rows} and {tensor.shape[0]})"
                )
            rows = tensor.shape[0]
        arrays[tensor.name] = tensor.array
    if len(arrays) != len(specs):
        missing = [name for name in specs if name not in arrays]
        raise InvalidInput(f"model '{model}' needs input(s) {', '.join(missing)}")
    if rows == 0:
        raise InvalidInput(f"request to model '{model}' has no rows")
    return arrays


def _shape_matches(expected: tuple[int, ...], got: tuple[int, ...]) -> bool:
    if len(expected) != len(got):
        return False
    for e, g in zip(expected, got, strict=True):
        if e != -1 and e != g:
            return False
    return True
