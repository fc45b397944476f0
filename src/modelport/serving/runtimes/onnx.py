"""ONNX graphs served through onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from modelport.errors import ArtifactError
from modelport.serving.config import RuntimeConfig
from modelport.serving.datatypes import NUMPY_DTYPES, ONNX_ELEM_TYPES, ORT_TYPES
from modelport.serving.runtimes.base import check_utf8
from modelport.serving.signature import Signature, TensorSpec


def onnx_file(path: Path) -> Path:
    """The ONNX file of an artifact: the file itself, or the one ``.onnx`` file of a folder."""
    if path.is_file():
        return path
    candidates = sorted(path.glob("*.onnx"))
    if len(candidates) != 1:
        raise ArtifactError(
            f"artifact folder must hold exactly one .onnx file, found {len(candidates)}"
        )
    return candidates[0]


def read_onnx_signature(path: Path) -> Signature:
    try:
        model = onnx.load(str(onnx_file(path)), load_external_data=False)
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError, Exception) as exc:  # noqa: BLE001 - onnx raises bare protobuf errors
        raise ArtifactError(f"cannot read the ONNX graph: {exc}") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_spec(v) for v in graph.input if v.name not in initializers)
    outputs = tuple(_spec(v) for v in graph.output)
    if not inputs or not outputs:
        raise ArtifactError("the ONNX graph declares no inputs or no outputs")
    return Signature(inputs, outputs)


def _spec(value: Any) -> TensorSpec:
    tensor_type = value.type.tensor_type
    datatype = ONNX_ELEM_TYPES.get(tensor_type.elem_type)
    if datatype is None:
        raise ArtifactError(
            f"tensor '{value.name}' has ONNX element type {tensor_type.elem_type}, which the "
            "Open Inference Protocol cannot carry"
        )
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    return TensorSpec(value.name, datatype, dims)


def session_options(config: RuntimeConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle onnxruntime workers spin by default; on a server they would take the cores the
    # event loop needs for HTTP and batching.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def run_options() -> ort.RunOptions:
    """Options shared by every run of one session; ``stop_runs`` aborts the runs in progress."""
    options = ort.RunOptions()
    options.log_severity_level = 4  # a run aborted on purpose is not an error worth a log line
    return options


def stop_runs(options: ort.RunOptions) -> None:
    """Make every run that uses ``options`` stop at its next operator, with an error.

    A runtime closed after its batch ran past the compute timeout may still be computing in
    an abandoned thread: this frees the thread and its core instead of letting it spin."""
    options.terminate = True


def create_session(path: Path, config: RuntimeConfig) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(config), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ArtifactError(f"onnxruntime cannot load the model: {exc}") from None


class OnnxRuntime:
    def __init__(self, path: Path, config: RuntimeConfig) -> None:
        self._session = create_session(onnx_file(path), config)
        inputs = tuple(
            TensorSpec(i.name, ORT_TYPES[i.type], _dims(i.shape))
            for i in self._session.get_inputs()
        )
        outputs = tuple(
            TensorSpec(o.name, ORT_TYPES[o.type], _dims(o.shape))
            for o in self._session.get_outputs()
        )
        self._signature = Signature(inputs, outputs)
        self._string_inputs = {s.name for s in inputs if s.datatype == "BYTES"}
        self._output_names = [s.name for s in outputs]
        self._run_options = run_options()

    @property
    def signature(self) -> Signature:
        return self._signature

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        for name in self._string_inputs:
            check_utf8(name, inputs[name])

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {
            name: _to_str(array) if name in self._string_inputs else array
            for name, array in inputs.items()
        }
        results = self._session.run(self._output_names, feed, self._run_options)
        out: dict[str, np.ndarray] = {}
        for name, value in zip(self._output_names, results, strict=True):
            array = np.asarray(value)
            if array.dtype.kind in ("U", "O"):
                array = _to_bytes(array)
            out[name] = array
        return out

    def close(self) -> None:
        stop_runs(self._run_options)
        del self._session


def _dims(shape: list[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else -1 for d in shape)


def _to_str(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.shape, dtype=object)
    out.flat[:] = [x.decode() if isinstance(x, bytes) else str(x) for x in array.flat]
    return out


def _to_bytes(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.shape, dtype=NUMPY_DTYPES["BYTES"])
    out.flat[:] = [x if isinstance(x, bytes) else str(x).encode() for x in array.flat]
    return out
