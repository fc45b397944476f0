"""The edge's parts on their own: the head read once, the body budget, inflating a body."""

from __future__ import annotations

import gzip
import zlib

import pytest

from modelport.api.bodies import UNCOUNTED_BYTES, BodyBudget, BodyPermit, inflate, read_body
from modelport.api.request_head import read_head
from modelport.errors import (
    HeadersTooLarge,
    InvalidInput,
    PayloadTooLarge,
    TooManyRequests,
    Unavailable,
)


def test_the_head_keeps_the_callers_sane_request_id_and_refuses_two_keys() -> None:
    head = read_head([(b"x-request-id", b"abc-123"), (b"authorization", b"Bearer k")], 1024)
    assert head.request_id == b"abc-123" and head.authorization == "Bearer k"
    assert head.problem is None
    twice = read_head([(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")], 1024)
    assert isinstance(twice.problem, InvalidInput)
    assert twice.request_id  # an error answer still carries an id


@pytest.mark.parametrize(
    "headers",
    [[(b"content-length", b"12x")], [(b"content-length", b"1"), (b"content-length", b"2")]],
)
def test_a_content_length_that_is_not_one_number_is_refused(
    headers: list[tuple[bytes, bytes]],
) -> None:
    assert isinstance(read_head(headers, 1024).problem, InvalidInput)


def test_headers_past_the_limit_are_refused() -> None:
    head = read_head([(b"x-pad", b"y" * 2000)], 1024)
    assert isinstance(head.problem, HeadersTooLarge)
    assert "1024" in head.problem.message


def test_the_budget_refuses_a_tenant_past_its_share_and_the_replica_past_its_total() -> None:
    kib = 1024
    budget = BodyBudget(total_bytes=1000 * kib, tenant_bytes=600 * kib)
    first = budget.permit("a", 1000 * kib, "limit", 500 * kib)
    with pytest.raises(TooManyRequests):
        budget.permit("a", 1000 * kib, "limit", 200 * kib)
    second = budget.permit("b", 1000 * kib, "limit", 450 * kib)
    with pytest.raises(Unavailable):
        budget.permit("c", 1000 * kib, "limit", 100 * kib)
    budget.release(first)
    budget.release(second)
    assert budget.held == 0
    budget.permit("c", 1000 * kib, "limit", 100 * kib)


def test_small_bodies_cost_the_budget_nothing() -> None:
    budget = BodyBudget(total_bytes=1, tenant_bytes=1)
    permit = budget.permit("a", UNCOUNTED_BYTES, "limit", UNCOUNTED_BYTES)
    assert budget.held == 0 and permit.reserved == 0


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    budget = BodyBudget(10_000, 10_000)
    with pytest.raises(PayloadTooLarge, match="the model's limit"):
        budget.permit("a", 100, "the model's limit", 101)
    assert budget.held == 0


async def test_a_chunked_body_is_refused_once_it_passes_the_cap() -> None:
    budget = BodyBudget(10**9, 10**9)
    permit = budget.permit("a", 100 * 1024, "cap", None)
    chunks = [{"type": "http.request", "body": b"x" * 60 * 1024, "more_body": True}] * 3

    async def receive() -> dict[str, object]:
        return chunks.pop()

    with pytest.raises(PayloadTooLarge):
        await read_body(receive, permit, budget)
    assert permit.reserved <= 100 * 1024  # never more than the cap was held
    budget.release(permit)
    assert budget.held == 0


def _permit(limit: int) -> BodyPermit:
    return BodyPermit("a", limit, "cap", 0)


def test_inflate_refuses_truncated_and_trailing_data() -> None:
    body = gzip.compress(b'{"inputs": []}')
    assert inflate(body, b"gzip", _permit(1000)) == b'{"inputs": []}'
    with pytest.raises(InvalidInput, match="truncated"):
        inflate(body[:-4], b"gzip", _permit(1000))
    with pytest.raises(InvalidInput, match="after the end"):
        inflate(body + b"junk", b"gzip", _permit(1000))
    with pytest.raises(InvalidInput, match="after the end"):
        inflate(zlib.compress(b"abc") + b"!", b"deflate", _permit(1000))


def test_inflate_counts_the_inflated_size_against_the_cap() -> None:
    bomb = gzip.compress(b"0" * 1_000_000)
    with pytest.raises(PayloadTooLarge):
        inflate(bomb, b"gzip", _permit(10_000))


def test_an_unknown_encoding_is_named() -> None:
    with pytest.raises(InvalidInput, match="br"):
        inflate(b"", b"br", _permit(10))
