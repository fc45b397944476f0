"""What a catalog writer sees when a product is wrong, and the demo catalog's data."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelport.demo.catalog import products
from modelport.errors import InvalidInput
from modelport.services.catalog import decode_cursor
from modelport.services.product_input import ProductLine, problems

GOOD = {
    "id": "sku-1",
    "title": "Chef's knife",
    "category": ["Home", "Kitchen"],
    "attributes": {"blade_cm": 20, "colors": ["black"], "dishwasher_safe": False},
    "price": {"amount": 4999, "currency": "EUR"},
    "images": ["https://img.example/1.jpg"],
}


def reason(**changes: object) -> str:
    with pytest.raises(ValidationError) as caught:
        ProductLine.model_validate({**GOOD, **changes})
    return problems(caught.value)


def test_a_valid_product_keeps_its_typed_attributes() -> None:
    line = ProductLine.model_validate(GOOD)
    assert line.attributes == GOOD["attributes"]
    assert line.availability == "in_stock" and line.description == ""


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"id": "has space"}, "id: a product id is 1-128 letters, digits"),
        ({"id": "x" * 129}, "id: a product id is"),
        ({"price": {"amount": 10, "currency": "eur"}}, "price.currency: a currency is an ISO 4217"),
        ({"price": {"amount": -1, "currency": "EUR"}}, "price.amount: Input should be greater"),
        ({"images": ["http://img.example/1.jpg"]}, "images.0: an image is an https:// URL"),
        ({"category": ["Home > Kitchen"]}, "category.0: a category level is a non-blank name"),
        ({"availability": "sold"}, "availability: Input should be 'in_stock'"),
        ({"colour": "red"}, "colour: unknown field; a product has title, description"),
        ({"attributes": {"bad name": 1}}, "attributes.bad name.[key]: an attribute name is"),
        ({"title": ""}, "title: String should have at least 1 character"),
    ],
)
def test_a_bad_product_is_refused_with_the_field_and_what_would_be_accepted(
    changes: dict[str, object], expected: str
) -> None:
    assert expected in reason(**changes)


def test_a_cursor_that_the_api_did_not_return_is_refused() -> None:
    with pytest.raises(InvalidInput, match="next_cursor from the previous page"):
        decode_cursor("not-a-cursor")


def test_the_demo_catalog_is_valid_and_the_same_every_time() -> None:
    first = list(products(500))
    assert first == list(products(500))
    assert len({p["id"] for p in first}) == 500
    for product in first:
        ProductLine.model_validate(product)
    assert len({p["category"][0] for p in first}) >= 5
    assert len({p["brand"] for p in first}) >= 20
