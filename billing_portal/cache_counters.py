"""An atomic counter in Django's cache, for the sign-in and API throttles.

On Redis it is one round trip (INCR and EXPIRE in a pipeline) instead of the three of Django's add() + incr()
(its incr() asks EXISTS first); elsewhere (local memory in the demo) add() + incr(). The key is made with the
cache's own KEY_PREFIX and version, so cache.get() reads the same count.
"""

from __future__ import annotations

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache


def cache_counter_incr(key: str, *, timeout: int) -> int:
    """Add one to the counter `key` (created at 0 if missing, expiring `timeout` seconds after its last
    increment) and return the new count."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        full_key = cache.make_and_validate_key(key)
        pipeline = cache._cache.get_client(full_key, write=True).pipeline(transaction=False)
        pipeline.incr(full_key)
        pipeline.expire(full_key, timeout)
        count, _ = pipeline.execute()
        return count
    if cache.add(key, 1, timeout=timeout):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=timeout)
        return 1
