"""What routes are handed besides their caller (``api.access``): the services, the request id."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, cast

from fastapi import Depends, Request

if TYPE_CHECKING:
    from modelport.wiring import Services


def services(request: Request) -> Services:
    return cast("Services", request.app.state.services)


def request_id(request: Request) -> str:
    """The request id the front door assigned (the ``x-request-id`` of the answer)."""
    return str(request.scope.get("state", {}).get("request_id", ""))


RequestId = Annotated[str, Depends(request_id)]
