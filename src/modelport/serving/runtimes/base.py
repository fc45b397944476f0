from __future__ import annotations

from typing import Protocol

import numpy as np

from modelport.serving.signature import Signature


class Runtime(Protocol):
    """Computes a batch. Called from worker threads; one call at a time per instance."""

    @property
    def signature(self) -> Signature: ...

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...
