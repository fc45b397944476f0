"""Which release changes a model's routing state allows (pure: the store runs these inside
the transaction that makes the change, so the state they judge is the one it changes)."""

from __future__ import annotations

from collections.abc import Mapping

from modelport.errors import Conflict
from modelport.routing.policy import PRODUCTION, RoutingPolicy, resolve_target


def policy_versions(model: str, policy: RoutingPolicy, aliases: Mapping[str, str]) -> list[str]:
    """The versions ``policy`` sends traffic to; refuses a target that is neither a version
    number nor an alias of the model."""
    known = ", ".join(sorted(aliases)) or "none"
    out = []
    for target in sorted(policy.targets()):
        version = resolve_target(target, dict(aliases))
        if version is None:
            raise Conflict(
                f"routing target '{target}' is neither a version number nor an alias "
                f"of model '{model}' (aliases: {known})"
            )
        out.append(version)
    return out


def check_alias_removable(model: str, alias: str, policy: RoutingPolicy | None) -> None:
    if policy is not None and alias in policy.targets():
        raise Conflict(
            f"alias '{alias}' is used by the routing policy of model '{model}'; "
            "change the policy first"
        )


def version_users(
    version: str,
    aliases: Mapping[str, str],
    policy: RoutingPolicy | None,
    rollout: tuple[int, str, str] | None,
    newest: str | None,
) -> list[str]:
    """What sends traffic to ``version``: aliases, the policy (by number), the active rollout
    ``(id, baseline, candidate)``, or unpinned traffic when it is the newest version and
    nothing else chooses one."""
    users = [f"alias '{a}'" for a, v in sorted(aliases.items()) if v == version]
    if policy is not None and any(
        target.isdigit() and resolve_target(target, dict(aliases)) == version
        for target in policy.targets()
    ):
        users.append("the routing policy")
    if rollout is not None and version in rollout[1:]:
        users.append(f"rollout {rollout[0]}")
    if (
        rollout is None
        and (policy is None or not policy.splits)
        and PRODUCTION not in aliases
        and newest == version
    ):
        users.append(
            "unpinned traffic (the newest version serves it while no 'production' "
            "alias or routing split chooses another)"
        )
    return users
