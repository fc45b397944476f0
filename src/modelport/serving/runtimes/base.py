from __future__ import annotations

from typing import Protocol

import numpy as np

from modelport.errors import InvalidInput
from modelport.serving.signature import Signature


class Runtime(Protocol):
    """Computes a batch. Called from worker threads; one call at a time per instance."""

    @property
    def signature(self) -> Signature: ...

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        """Cheap per-request checks beyond the signature, run before queueing so one bad
        request cannot fail a whole batch. Raises ``InvalidInput``."""
        ...

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def check_utf8(name: str, array: np.ndarray) -> None:
    """BYTES elements that a runtime will read as text must be valid UTF-8."""
    for item in array.flat:
        if isinstance(item, bytes):
            try:
                item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"input '{name}' holds an element that is not valid UTF-8 text"
                ) from None
