"""Which release changes a model's routing state allows: the rules the release service hands
to the store, judged here without a database."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import modelport
from modelport.errors import Conflict
from modelport.routing.policy import RoutingPolicy, ShadowSpec, Split
from modelport.routing.release_rules import check_alias_removable, policy_versions, version_users

ALIASES = {"production": "1", "canary": "2"}
SPLIT = RoutingPolicy(splits=(Split("production", 90), Split("canary", 10)))


def test_a_policy_routes_to_the_versions_its_aliases_and_numbers_name() -> None:
    policy = RoutingPolicy(splits=(Split("production", 90), Split("3", 10)))
    assert policy_versions("ranker", policy, ALIASES) == ["3", "1"]


def test_a_policy_naming_an_unknown_alias_is_refused_listing_the_known_ones() -> None:
    policy = RoutingPolicy(splits=(Split("1", 1),), shadow=ShadowSpec("nightly", 5))
    with pytest.raises(Conflict) as info:
        policy_versions("ranker", policy, ALIASES)
    assert "'nightly'" in info.value.message and "canary, production" in info.value.message


def test_an_alias_the_policy_routes_to_cannot_be_removed() -> None:
    with pytest.raises(Conflict, match="change the policy first"):
        check_alias_removable("ranker", "canary", SPLIT)
    check_alias_removable("ranker", "nightly", SPLIT)
    check_alias_removable("ranker", "canary", None)


def test_a_version_is_in_use_by_its_aliases_numbered_targets_and_rollout() -> None:
    numbered = RoutingPolicy(splits=(Split("production", 90), Split("2", 10)))
    assert version_users("2", ALIASES, numbered, (7, "1", "2"), "3") == [
        "alias 'canary'",
        "the routing policy",
        "rollout 7",
    ]
    assert version_users("3", ALIASES, numbered, None, "3") == []


def test_the_newest_version_serves_unpinned_traffic_while_nothing_else_chooses() -> None:
    assert "unpinned traffic" in version_users("3", {}, None, None, "3")[0]
    # A production alias, a split or a rollout chooses instead.
    assert version_users("3", {"production": "1"}, None, None, "3") == []
    assert version_users("3", {"canary": "1"}, SPLIT, None, "3") == []
    assert version_users("3", {}, None, (4, "1", "2"), "3") == []


def test_no_store_imports_the_engine_services_or_transports() -> None:
    # The rules above are applied by the release service; the stores only keep the state.
    stores = Path(modelport.__file__).parent / "stores"
    above = ("modelport.routing", "modelport.serving", "modelport.services", "modelport.api")
    offenders = {}
    for path in stores.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(above):
                offenders[path.name] = node.module
    assert offenders == {}
