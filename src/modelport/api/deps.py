"""What routes are handed besides their caller (``api.access``): the services."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from fastapi import Request

if TYPE_CHECKING:
    from modelport.wiring import Services


def services(request: Request) -> Services:
    return cast("Services", request.app.state.services)
