"""What an experiment is made of, as a client writes it, and the checks it must pass.

The body is parsed with pydantic (its shape: types, lengths, unknown fields); ``check_*``
then applies the rules that relate fields to each other (weights summing to 100, unique
variant names, each target matching the surface) with a message that says what would pass.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelport.errors import InvalidInput
from modelport.routing.assignment import BUCKETS

MAX_VARIANTS = 20
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
UNITS = ("user", "session", "custom")
SURFACE_HELP = '"inference:<model>", "search" or "recommendations:<kind>"'
SURFACE_PATTERN = (
    r"^(inference:[A-Za-z0-9][A-Za-z0-9._-]{0,127}|search|recommendations:[a-z0-9_-]{1,64})$"
)
_SURFACE = re.compile(SURFACE_PATTERN)

Name = Annotated[str, Field(pattern=f"^{ID_PATTERN}$")]
Scalar = str | int | float | bool
Params = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=64)], Scalar], Field(max_length=32)
]


_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelTarget(_Strict):
    """A model the inference path serves, by alias or by version (exactly one)."""

    kind: Literal["model"]
    model: Annotated[str, Field(min_length=1, max_length=128)]
    alias: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    version: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class SearchTarget(_Strict):
    """A configuration of ``/v1/search``: its mode and parameters."""

    kind: Literal["search"]
    mode: Literal["semantic", "lexical", "hybrid"] | None = None
    params: Params = Field(default_factory=dict)


class RecommendationsTarget(_Strict):
    """A recommendation strategy, its parameters and optionally the ranker that orders it."""

    kind: Literal["recommendations"]
    strategy: Annotated[str, Field(min_length=1, max_length=64)]
    params: Params = Field(default_factory=dict)
    ranker: ModelTarget | None = None


Target = Annotated[ModelTarget | SearchTarget | RecommendationsTarget, Field(discriminator="kind")]


class VariantIn(_Strict):
    name: Name
    weight: float = Field(description="Percent of the units, at most two decimals; all sum to 100.")
    target: Target


class LayerIn(_Strict):
    """A mutual-exclusion layer: running experiments of one layer take disjoint ranges of its
    10,000 buckets, so no unit is in two of them."""

    name: Name
    start: int = Field(default=0, ge=0, le=BUCKETS)
    end: int = Field(default=BUCKETS, ge=0, le=BUCKETS)


class GuardrailIn(_Strict):
    """Stop the experiment when a variant (other than the control), with at least
    ``min_exposures`` exposures, is past ``max``: for ``error_rate`` the lower bound of its
    95 % interval is above ``max`` (a share, 0-1); for ``p99_ms`` its p99 latency is."""

    metric: Literal["error_rate", "p99_ms"]
    max: float = Field(gt=0)
    min_exposures: int = Field(default=200, ge=1)


class ExperimentIn(_Strict):
    id: Name
    name: Annotated[str, Field(max_length=200)] = ""
    description: Annotated[str, Field(max_length=4000)] = ""
    surface: str = Field(
        description=f"What it covers: {SURFACE_HELP}.",
        # In the schema only: the service checks it, with a message that says the rule.
        json_schema_extra={"pattern": SURFACE_PATTERN},
    )
    unit: str = Field(
        description='"user", "session" or "custom" (then give unit_key).',
        json_schema_extra={"enum": list(UNITS)},
    )
    unit_key: Name | None = None
    variants: list[VariantIn] = Field(min_length=2, max_length=MAX_VARIANTS)
    control: Name | None = Field(
        default=None, description="A variant's name; the first one if absent."
    )
    salt: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    layer: LayerIn | None = None
    guardrail: GuardrailIn | None = None


class ExperimentPatch(_Strict):
    """What may change at any time; variants and weights change only with a new run."""

    name: Annotated[str, Field(max_length=200)] | None = None
    description: Annotated[str, Field(max_length=4000)] | None = None
    guardrail: GuardrailIn | None = None
    variants: list[VariantIn] | None = Field(default=None, min_length=2, max_length=MAX_VARIANTS)
    control: Name | None = None
    unit: str | None = None
    unit_key: Name | None = None
    surface: str | None = None
    layer: LayerIn | None = None
    salt: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class NewRunIn(_Strict):
    """A new run: new variants (or weights), a new salt, results from zero."""

    variants: list[VariantIn] = Field(min_length=2, max_length=MAX_VARIANTS)
    control: Name | None = None
    salt: Annotated[str, Field(min_length=1, max_length=100)] | None = None


def parse(model: type[_M], body: _M | bytes | dict[str, Any], what: str) -> _M:
    if isinstance(body, model):
        return body
    try:
        if isinstance(body, bytes):
            return model.model_validate_json(body)
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput(f"invalid {what}: {problems(exc)}") from None


def problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err.get("loc", ()))
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            message = "not a JSON object: " + message.removeprefix("Invalid JSON: ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def check_unit(unit: str, unit_key: str | None) -> None:
    if unit not in UNITS:
        raise InvalidInput(
            f'unknown unit {unit[:64]!r}: use "user", "session" or "custom" with unit_key'
        )
    if (unit == "custom") != (unit_key is not None):
        raise InvalidInput('unit_key names the key of a "custom" unit, and only of one')


def check_surface(surface: str) -> None:
    if not _SURFACE.match(surface):
        raise InvalidInput(f"unknown surface {surface[:200]!r}: use {SURFACE_HELP}")


def check_variants(surface: str, variants: list[VariantIn], control: str | None) -> str:
    """The control's name, once the variants fit together and fit the surface."""
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInput(f"variant names must be unique; repeated: {', '.join(repeated)}")
    for variant in variants:
        weight = variant.weight
        if (
            not math.isfinite(weight)
            or weight < 0
            or abs(weight * 100 - round(weight * 100)) > 1e-6
        ):
            raise InvalidInput(
                f"variant {variant.name}: weight {weight} must be a percentage from 0 to 100 "
                "with at most two decimals"
            )
        _check_target(surface, variant)
    total = sum(round(v.weight * 100) for v in variants)
    if total != BUCKETS:
        raise InvalidInput(
            f"weights must sum to 100; they sum to {total / 100:g} "
            f"({', '.join(f'{v.name}={v.weight:g}' for v in variants)})"
        )
    if control is None:
        return names[0]
    if control not in names:
        raise InvalidInput(f"control {control!r} is not a variant; variants: {', '.join(names)}")
    return control


def check_layer(layer: LayerIn | None) -> None:
    if layer is not None and not layer.start < layer.end:
        raise InvalidInput(
            f"layer {layer.name}: start ({layer.start}) must be below end ({layer.end})"
        )


def _check_target(surface: str, variant: VariantIn) -> None:
    target = variant.target
    where = f"variant {variant.name}"
    if isinstance(target, ModelTarget) or (
        isinstance(target, RecommendationsTarget) and target.ranker is not None
    ):
        model = target if isinstance(target, ModelTarget) else target.ranker
        assert model is not None  # noqa: S101 - narrowed just above
        if (model.alias is None) == (model.version is None):
            raise InvalidInput(f"{where}: a model target names an alias or a version (one)")
    kind, _, rest = surface.partition(":")
    expected = {"inference": "model", "search": "search", "recommendations": "recommendations"}
    if target.kind != expected[kind]:
        raise InvalidInput(
            f'{where}: a {kind} experiment\'s targets are of kind "{expected[kind]}", '
            f'not "{target.kind}"'
        )
    if isinstance(target, ModelTarget) and target.model != rest:
        raise InvalidInput(
            f"{where}: targets model {target.model!r} but the surface is inference:{rest}"
        )
