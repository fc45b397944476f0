"""What a catalog product may hold: the shape a writer sends, with messages that say what to fix.

The same models check a ``PUT /v1/catalog/products/{id}`` body and each line of an import, so
both answer a mistake with the same words. Bounds keep one product small (a few hundred KiB at
most) and a category path usable as a prefix filter.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from modelport.errors import InvalidInput

#: Levels of a category path are stored joined by this (``Home > Kitchen > Knives``).
CATEGORY_SEPARATOR = " > "
AVAILABILITY = ("in_stock", "out_of_stock", "preorder", "discontinued")
MAX_TITLE = 1024
MAX_DESCRIPTION = 20_000
MAX_BRAND = 256
MAX_LEVELS = 8
MAX_LEVEL = 120
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_NAME = 64
MAX_ATTRIBUTE_TEXT = 1024
MAX_ATTRIBUTE_LIST = 64
MAX_IMAGES = 16
MAX_URL = 2048
MAX_AMOUNT = 10**15

SKU_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:~@+\-]{0,127}"
_SKU = re.compile(SKU_PATTERN)
SKU_HELP = "1-128 letters, digits or . _ : ~ @ + -, starting with a letter or digit"
_CURRENCY = re.compile(r"[A-Z]{3}")
_HTTPS = re.compile(r"https://\S+")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")


def check_sku(value: str) -> str:
    if not _SKU.fullmatch(value):
        raise PydanticCustomError(
            "product_id",
            "a product id is {help}; got {got}",
            {"help": SKU_HELP, "got": repr(value[:140])},
        )
    return value


def _currency(value: str) -> str:
    if not _CURRENCY.fullmatch(value):
        raise PydanticCustomError(
            "currency",
            "a currency is an ISO 4217 code of 3 uppercase letters such as EUR or USD; got {got}",
            {"got": repr(value[:16])},
        )
    return value


def _level(value: str) -> str:
    if not value.strip() or CATEGORY_SEPARATOR.strip() in value:
        raise PydanticCustomError(
            "category_level",
            "a category level is a non-blank name without '>' (send the path as a list of "
            'levels, e.g. ["Home", "Kitchen"]); got {got}',
            {"got": repr(value[:MAX_LEVEL])},
        )
    return value


def _https(value: str) -> str:
    if not _HTTPS.fullmatch(value):
        raise PydanticCustomError(
            "https_url",
            "an image is an https:// URL without spaces; got {got}",
            {"got": repr(value[:80])},
        )
    return value


def _attribute_name(value: str) -> str:
    if not _ATTRIBUTE_NAME.fullmatch(value):
        raise PydanticCustomError(
            "attribute_name",
            "an attribute name is 1-64 letters, digits or _ . -; got {got}",
            {"got": repr(value[:MAX_ATTRIBUTE_NAME])},
        )
    return value


Sku = Annotated[str, AfterValidator(check_sku)]
# The patterns below only describe the rules in the JSON schema; the validators check them
# and say what is wrong.
Level = Annotated[
    str,
    StringConstraints(max_length=MAX_LEVEL),
    AfterValidator(_level),
    WithJsonSchema({"type": "string", "maxLength": MAX_LEVEL, "pattern": r"^[^>]*\S[^>]*$"}),
]
ImageUrl = Annotated[
    str,
    StringConstraints(max_length=MAX_URL),
    AfterValidator(_https),
    WithJsonSchema({"type": "string", "maxLength": MAX_URL, "pattern": r"^https://\S+$"}),
]
AttributeName = Annotated[str, AfterValidator(_attribute_name)]
AttributeText = Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_TEXT)]
AttributeValue = (
    bool
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
    | AttributeText
    | Annotated[list[AttributeText], Field(max_length=MAX_ATTRIBUTE_LIST)]
)
Availability = Literal["in_stock", "out_of_stock", "preorder", "discontinued"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PriceIn(_Strict):
    amount: int = Field(ge=0, le=MAX_AMOUNT, description="In minor units (cents): 1999 is 19.99.")
    currency: Annotated[
        str,
        AfterValidator(_currency),
        WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$"}),
    ] = Field(description="ISO 4217 code, e.g. EUR.", examples=["EUR"])


class ProductIn(_Strict):
    """A product as written; the id is the path's (``PUT``) or the line's (import)."""

    title: str = Field(min_length=1, max_length=MAX_TITLE)
    description: str = Field(default="", max_length=MAX_DESCRIPTION)
    brand: str | None = Field(default=None, min_length=1, max_length=MAX_BRAND)
    category: list[Level] = Field(
        default_factory=list,
        max_length=MAX_LEVELS,
        description='The category path, broadest first, e.g. ["Home", "Kitchen", "Knives"].',
    )
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict,
        max_length=MAX_ATTRIBUTES,
        description="Typed attributes: string, number, boolean or a list of strings.",
        json_schema_extra={"propertyNames": {"pattern": f"^{_ATTRIBUTE_NAME.pattern}$"}},
    )
    price: PriceIn | None = None
    availability: Availability = "in_stock"
    images: list[ImageUrl] = Field(default_factory=list, max_length=MAX_IMAGES)


class ProductLine(ProductIn):
    """One line of an import: a product with its id."""

    id: Sku


def problems(exc: ValidationError) -> str:
    """Pydantic's errors as one line a person can act on: ``field: what is wrong``."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err.get("loc", ()))
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            message = "not a JSON object: " + message.removeprefix("Invalid JSON: ")
        elif err.get("type") == "extra_forbidden":
            message = "unknown field; a product has " + ", ".join(ProductLine.model_fields)
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_product(body: bytes) -> ProductIn:
    """A product (without its id) from a JSON body; ``InvalidInput`` saying what is wrong."""
    try:
        return ProductIn.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidInput(f"invalid product: {problems(exc)}") from None
