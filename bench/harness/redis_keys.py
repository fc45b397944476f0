"""Cleaning up after a benchmark on the shared Redis: only the keys under its own prefix."""

from __future__ import annotations


async def forget_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix:`` (and nothing else) on the Redis at ``url``."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()
