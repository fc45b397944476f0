"""Routing policies compiled to routes: weighted splits, sticky keys that agree across replicas,
canaries that only ever grow, and how targets (aliases, version numbers) resolve."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.errors import InvalidInput
from modelport.routing.policy import (
    PRODUCTION,
    Route,
    RoutingPolicy,
    ShadowSpec,
    Split,
    bucket,
    compile_route,
    resolve_target,
)

ALIASES = {"production": "1", "canary": "2", "stable": "1"}

keys = st.text(min_size=0, max_size=40)


def compiled(
    policy: RoutingPolicy | None,
    aliases: dict[str, str] | None = None,
    *,
    override: list[tuple[str, float]] | None = None,
    model: str = "ranker",
) -> Route:
    route = compile_route(model, policy, ALIASES if aliases is None else aliases, override=override)
    assert route is not None
    return route


def canary(percent: float, baseline: str = "1", candidate: str = "2") -> Route:
    """The route of a rollout step: ``percent`` of traffic on the candidate."""
    return compiled(None, override=[(baseline, 100 - percent), (candidate, percent)])


# --------------------------------------------------------------------------- weighted splits


def test_random_traffic_converges_to_the_split_weights() -> None:
    route = compiled(RoutingPolicy(splits=(Split("production", 90), Split("canary", 10))))
    rng = random.Random(1234)
    draws = 20_000
    on_canary = sum(route.choose(rng=rng) == "2" for _ in range(draws))
    assert abs(on_canary / draws - 0.10) <= 0.015


def test_keyed_traffic_converges_to_the_split_weights() -> None:
    route = compiled(RoutingPolicy(splits=(Split("production", 70), Split("canary", 30))))
    rng = random.Random(99)
    draws = 20_000
    on_canary = sum(route.choose(f"user-{rng.getrandbits(64):x}") == "2" for _ in range(draws))
    assert abs(on_canary / draws - 0.30) <= 0.015


def test_three_way_split_converges_to_each_weight() -> None:
    aliases = {"a": "1", "b": "2", "c": "3"}
    route = compiled(RoutingPolicy(splits=(Split("a", 1), Split("b", 2), Split("c", 7))), aliases)
    rng = random.Random(5)
    draws = 20_000
    counts = {"1": 0, "2": 0, "3": 0}
    for _ in range(draws):
        counts[route.choose(rng=rng)] += 1
    for version, share in (("1", 0.1), ("2", 0.2), ("3", 0.7)):
        assert abs(counts[version] / draws - share) <= 0.015


def test_a_split_with_zero_weight_gets_no_traffic() -> None:
    route = compiled(RoutingPolicy(splits=(Split("production", 100), Split("canary", 0))))
    rng = random.Random(3)
    assert {route.choose(rng=rng) for _ in range(2_000)} == {"1"}
    assert route.needed() == {"1"}


def test_two_targets_naming_the_same_version_share_its_traffic() -> None:
    # "stable" and "production" both point at version 1: 80 % of traffic, not two buckets.
    route = compiled(
        RoutingPolicy(splits=(Split("production", 40), Split("stable", 40), Split("canary", 20)))
    )
    assert route.versions == ("1", "2")
    assert route.cumulative == pytest.approx((0.8, 1.0))


# --------------------------------------------------------------------------- sticky keys


@settings(max_examples=200)
@given(key=keys, weight=st.integers(min_value=1, max_value=99))
def test_a_key_always_gets_the_same_version(key: str, weight: int) -> None:
    policy = RoutingPolicy(splits=(Split("production", 100 - weight), Split("canary", weight)))
    first = compiled(policy).choose(key)
    # A second replica compiles its own route from the same stored policy.
    again = [compiled(policy).choose(key) for _ in range(3)]
    assert again == [first] * 3


@given(model=st.text(max_size=20), key=keys)
def test_bucket_is_a_point_in_the_unit_interval(model: str, key: str) -> None:
    assert 0.0 <= bucket(model, key) < 1.0


def test_bucket_is_the_same_in_another_process() -> None:
    """Replicas are separate processes (with their own hash seeds): they must agree."""
    pairs = [("ranker", "user-1"), ("ranker", "user-2"), ("minilm", "user-1"), ("m", "")]
    script = (
        "import sys\n"
        "from modelport.routing.policy import bucket\n"
        "for line in sys.stdin.read().splitlines():\n"
        "    model, _, key = line.partition('\\t')\n"
        "    print(repr(bucket(model, key)))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        input="\n".join(f"{m}\t{k}" for m, k in pairs),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    theirs = [float(line) for line in result.stdout.splitlines()]
    assert theirs == [bucket(m, k) for m, k in pairs]


def test_bucket_is_the_same_across_releases() -> None:
    # Pinned: a rolling upgrade runs old and new replicas side by side, and a caller must not
    # change version because its request landed on the other build.
    assert bucket("ranker", "user-42") == 0.3945518310287171


def test_the_same_key_lands_in_independent_buckets_of_different_models() -> None:
    # Otherwise the same 10 % of callers would be every model's canary.
    rng = random.Random(8)
    users = [f"user-{rng.getrandbits(64):x}" for _ in range(20_000)]
    both = sum(bucket("ranker", u) < 0.1 and bucket("minilm", u) < 0.1 for u in users)
    assert abs(both / len(users) - 0.01) <= 0.005


@settings(max_examples=300)
@given(key=keys, candidate_is_newer=st.booleans())
def test_a_key_on_the_candidate_stays_there_as_the_canary_grows(
    key: str, candidate_is_newer: bool
) -> None:
    baseline, candidate = ("1", "2") if candidate_is_newer else ("5", "3")
    on_candidate = [
        canary(p, baseline, candidate).choose(key) == candidate for p in (5, 25, 50, 100)
    ]
    # Once on the candidate, never back on the baseline while the share grows.
    first = on_candidate.index(True)  # at 100 % every key is on the candidate
    assert all(on_candidate[first:])


def test_a_growing_canary_takes_its_share_of_keys_and_keeps_the_earlier_ones() -> None:
    rng = random.Random(21)
    users = [f"user-{rng.getrandbits(64):x}" for _ in range(10_000)]
    previous: set[str] = set()
    for percent in (5, 25, 50, 100):
        route = canary(percent)
        current = {u for u in users if route.choose(u) == "2"}
        assert previous <= current
        assert abs(len(current) / len(users) - percent / 100) <= 0.015
        previous = current
    assert previous == set(users)


# --------------------------------------------------------------------------- targets


def test_an_alias_resolves_to_its_version_and_a_number_to_itself() -> None:
    assert resolve_target("canary", ALIASES) == "2"
    assert resolve_target("7", ALIASES) == "7"
    assert resolve_target("shadowy", ALIASES) is None


def test_a_policy_on_aliases_routes_to_their_versions() -> None:
    route = compiled(RoutingPolicy(splits=(Split("canary", 1),)))
    assert route.choose("anyone") == "2"
    # Moving the alias moves the traffic: the policy is compiled against the new aliases.
    moved = compiled(RoutingPolicy(splits=(Split("canary", 1),)), {**ALIASES, "canary": "9"})
    assert moved.choose("anyone") == "9"


def test_a_version_number_target_needs_no_alias() -> None:
    route = compiled(RoutingPolicy(splits=(Split("4", 1),)), {})
    assert route.choose() == "4"


def test_an_unknown_target_is_refused_with_its_name() -> None:
    policy = RoutingPolicy(splits=(Split("production", 90), Split("typo", 10)))
    with pytest.raises(InvalidInput) as info:
        compile_route("ranker", policy, ALIASES)
    assert "'typo'" in info.value.message
    assert "'ranker'" in info.value.message


def test_without_a_policy_traffic_follows_production() -> None:
    route = compiled(None, {PRODUCTION: "3", "canary": "4"})
    assert route.versions == ("3",)
    assert route.choose("anyone") == "3"


def test_a_policy_without_splits_still_follows_production() -> None:
    policy = RoutingPolicy(shadow=ShadowSpec("canary", 10))
    route = compiled(policy, {PRODUCTION: "3", "canary": "4"})
    assert route.choose() == "3"
    assert route.shadow_version == "4"


def test_nothing_routes_a_model_without_policy_or_production_alias() -> None:
    assert compile_route("ranker", None, {"canary": "2"}) is None
    assert compile_route("ranker", RoutingPolicy(), {}) is None


def test_shadow_and_fallback_resolve_to_versions() -> None:
    policy = RoutingPolicy(
        splits=(Split("production", 1),),
        sticky_key="user",
        shadow=ShadowSpec("canary", 25, tolerance=0.01),
        fallback="stable",
    )
    route = compiled(policy, {"production": "3", "canary": "4", "stable": "2"})
    assert route.shadow_version == "4"
    assert route.shadow_fraction == pytest.approx(0.25)
    assert route.shadow_tolerance == pytest.approx(0.01)
    assert route.fallback_version == "2"
    assert route.sticky_key == "user"
    assert route.needed() == {"2", "3", "4"}


def test_a_shadow_whose_alias_is_gone_mirrors_nothing() -> None:
    route = compiled(RoutingPolicy(shadow=ShadowSpec("gone", 50)), {PRODUCTION: "1"})
    assert route.shadow_version is None
    assert route.shadow_fraction == 0.0


def test_a_rollout_split_overrides_the_policy_splits_but_keeps_shadow_and_fallback() -> None:
    policy = RoutingPolicy(
        splits=(Split("production", 100),),
        sticky_key="user",
        shadow=ShadowSpec("canary", 10),
        fallback="stable",
    )
    route = compiled(policy, override=[("1", 75), ("2", 25)])
    assert route.versions == ("1", "2")
    assert route.cumulative == pytest.approx((0.75, 1.0))
    assert route.sticky_key == "user"
    assert route.shadow_version == "2"
    assert route.fallback_version == "1"
    rng = random.Random(11)
    share = sum(route.choose(rng=rng) == "2" for _ in range(20_000)) / 20_000
    assert abs(share - 0.25) <= 0.015


def test_a_finished_rollout_override_sends_everything_to_the_candidate() -> None:
    route = canary(100)
    assert route.versions == ("2",)
    assert route.needed() == {"2"}


# --------------------------------------------------------------------------- storage


@given(
    splits=st.lists(
        st.tuples(
            st.sampled_from(["production", "canary", "1", "2"]),
            st.floats(min_value=0, max_value=100),
        ),
        max_size=4,
    ),
    sticky=st.none() | st.text(max_size=10),
    shadow=st.none()
    | st.builds(ShadowSpec, st.sampled_from(["canary", "3"]), st.floats(0, 100), st.floats(0, 1)),
    fallback=st.none() | st.sampled_from(["stable", "1"]),
)
def test_a_policy_survives_its_stored_form(
    splits: list[tuple[str, float]],
    sticky: str | None,
    shadow: ShadowSpec | None,
    fallback: str | None,
) -> None:
    policy = RoutingPolicy(tuple(Split(t, w) for t, w in splits), sticky, shadow, fallback)
    assert RoutingPolicy.from_dict(policy.to_dict()) == policy


def test_targets_lists_every_target_the_policy_names() -> None:
    policy = RoutingPolicy(
        splits=(Split("production", 1), Split("3", 1)),
        shadow=ShadowSpec("canary", 5),
        fallback="stable",
    )
    assert policy.targets() == {"production", "3", "canary", "stable"}
