"""Who is calling and whether they may: the one place a request is authenticated.

``Gate.admit`` runs for every route, the infer fast path included, before any body is read:
it authenticates the key (cached, see ``services.tenancy.Authenticator``), checks the route's
``Access`` (scope, platform admin) and the tenant's request rate.
"""

from __future__ import annotations

from modelport.api.access import Access
from modelport.api.request_head import RequestHead
from modelport.services.quotas import QuotaGate
from modelport.services.tenancy import Authenticator, Principal


class Gate:
    __slots__ = ("_auth", "_quotas")

    def __init__(self, authenticator: Authenticator, quotas: QuotaGate) -> None:
        self._auth = authenticator
        self._quotas = quotas

    def known(self, head: RequestHead, access: Access) -> Principal | None:
        """``admit`` without waiting, for the common case (a cached key; a tenant without a
        rate limit, or whose limiter decides at once): the caller, or None when ``admit``
        must run. Raises what ``admit`` would for a key the cache knows to be invalid,
        without the scope or over its rate."""
        caller = self._auth.cached(head.authorization)
        if caller is None:
            return None
        tenant = access.authorize(caller)
        if (
            tenant is not None
            and caller.quotas.rate_limit_rps > 0
            and not self._quotas.check_rate_now(tenant, caller.quotas)
        ):
            return None
        return caller

    async def admit(self, head: RequestHead, access: Access) -> Principal | None:
        """The caller of a route with ``access`` (None for a public route), or the domain error
        that refuses it: 401 without a valid key, 403 without the scope, 429 over the rate."""
        if access.public:
            return None
        caller = self._auth.cached(head.authorization)
        if caller is None:
            caller = await self._auth.authenticate(head.authorization)
        tenant = access.authorize(caller)
        if tenant is not None and caller.quotas.rate_limit_rps > 0:
            await self._quotas.check_rate(tenant, caller.quotas)
        return caller
