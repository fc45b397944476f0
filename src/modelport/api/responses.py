from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JsonResponse(JSONResponse):
    """JSON through orjson, for the responses built by hand (errors, readiness)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
