"""What authenticating a request costs, by kind of key, on a real registry database.

``Authenticator.authenticate`` is timed in-process (no HTTP) for: a valid key the cache holds,
a forged secret with a real key's prefix, a random well-formed key (a new prefix each time),
and one unknown key sent again and again. Also reported: how many registry reads and cache
entries 10,000 random keys add. Run it with ``--database-url`` pointing at PostgreSQL
(production) or SQLite (default, a temporary file).

    .venv/bin/python bench/auth_keys.py --database-url postgresql+asyncpg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event

from modelport.errors import Unauthenticated
from modelport.services.tenancy import Authenticator, TenancyService
from modelport.stores.sql import create_engine, migrate
from modelport.stores.tenancy import TenancyStore


def random_key() -> str:
    return f"mp_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


async def timed(label: str, call: Callable[[], Awaitable[Any]], n: int) -> None:
    samples: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        try:
            await call()
        except Unauthenticated:
            pass
        samples.append(time.perf_counter() - start)
    samples.sort()
    median = statistics.median(samples) * 1e6
    p99 = samples[int(len(samples) * 0.99)] * 1e6
    print(f"{label:<48} median {median:8.1f} us   p99 {p99:8.1f} us")


async def main(database_url: str | None, n: int, flood: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="auth-bench-"))
    url = database_url or f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    await migrate(url)
    engine = create_engine(url)
    store = TenancyStore(engine)
    tenancy = TenancyService(store)
    try:
        tenant = f"bench-{secrets.token_hex(3)}"
        await tenancy.ensure_tenant(tenant)
        issued = await tenancy.create_key(tenant, ["infer"], name="bench")
        valid = f"Bearer {issued.secret}"
        prefix = issued.record.prefix
        unknown = f"Bearer {random_key()}"
        auth = Authenticator(store, None, ttl_s=60.0)
        await auth.authenticate(valid)
        queries = [0]

        def count(*_: Any) -> None:
            queries[0] += 1

        event.listen(engine.sync_engine, "before_cursor_execute", count)
        print(f"database: {url.split('://')[0]}, {n} calls each")
        await timed("valid key, cached", lambda: auth.authenticate(valid), n)
        await timed(
            "forged secret of a real prefix (new each call)",
            lambda: auth.authenticate(f"Bearer mp_{prefix}_{secrets.token_urlsafe(32)}"),
            n,
        )
        await timed(
            "random well-formed key (new each call)",
            lambda: auth.authenticate(f"Bearer {random_key()}"),
            n,
        )
        await timed("one unknown key, again and again", lambda: auth.authenticate(unknown), n)
        before = queries[0]
        for _ in range(flood):
            try:
                await auth.authenticate(f"Bearer {random_key()}")
            except Unauthenticated:
                pass
        sizes = auth.cache_size()
        print(f"{flood} random keys: {queries[0] - before} registry reads, cache sizes {sizes}")
        before = queries[0]
        for _ in range(n):
            try:
                await auth.authenticate(f"Bearer mp_{prefix}_{secrets.token_urlsafe(32)}")
            except Unauthenticated:
                pass
        print(f"{n} forged secrets of a real prefix: {queries[0] - before} registry reads")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--flood", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.database_url, args.n, args.flood))
