"""The limit stores, in the process and in Redis: GCRA rates, leases and capped counters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from conftest import free_port, unique_redis_prefix

from app.accounts.limits import Bucket, LimitStore, MemoryLimitStore, RedisLimitStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LimitStore]:
    if request.param == "memory":
        yield MemoryLimitStore()
        return
    url: str = request.getfixturevalue("redis_url")
    redis_store = RedisLimitStore(url, prefix=unique_redis_prefix())
    yield redis_store
    await redis_store.aclose()


async def test_burst_up_to_limit_then_refused(store: LimitStore) -> None:
    bucket = Bucket("rate:burst", "key", 5, 60.0)

    decisions = [await store.hit([bucket]) for _ in range(6)]

    assert [decision.allowed for decision in decisions] == [True] * 5 + [False]
    assert [decision.states[0].remaining for decision in decisions[:5]] == [4, 3, 2, 1, 0]
    assert 11.5 < decisions[5].retry_after_s <= 12.0  # one request every 60 / 5 s
    assert 59 < decisions[4].states[0].reset_s <= 60


async def test_refused_request_spends_nothing(store: LimitStore) -> None:
    roomy = Bucket("rate:roomy", "key", 100, 60.0)
    full = Bucket("rate:full", "account", 1, 60.0)
    await store.hit([full])

    refused = await store.hit([roomy, full])
    after = await store.hit([roomy])

    assert not refused.allowed
    assert after.states[0].remaining == 99


async def test_honouring_retry_after_succeeds(store: LimitStore) -> None:
    bucket = Bucket("rate:fast", "key", 600, 1.0)  # one request every 1.67 ms after the burst
    while (decision := await store.hit([bucket])).allowed:
        pass

    await asyncio.sleep(decision.retry_after_s + 0.01)

    assert (await store.hit([bucket])).allowed


async def test_leases_cap_concurrency_and_free_on_release(store: LimitStore) -> None:
    taken = [await store.acquire_lease("leases:a", 2, f"lease-{index}", 60) for index in range(3)]
    await store.release_lease("leases:a", "lease-0")
    again = await store.acquire_lease("leases:a", 2, "lease-3", 60)

    assert taken == [True, True, False]
    assert again is True


async def test_expired_lease_frees_its_slot(store: LimitStore) -> None:
    assert await store.acquire_lease("leases:b", 1, "dead-process", 0.05)
    refused = await store.acquire_lease("leases:b", 1, "second", 60)
    await asyncio.sleep(0.1)

    assert refused is False
    assert await store.acquire_lease("leases:b", 1, "third", 60)


async def test_capped_counter(store: LimitStore) -> None:
    results = [await store.add_capped("counter:a", 3, 10, 60) for _ in range(4)]

    assert [(result.accepted, result.value) for result in results] == [
        (True, 3),
        (True, 6),
        (True, 9),
        (False, 9),
    ]
    assert await store.read_counter("counter:a") == 9
    assert await store.read_counter("counter:unknown") == 0


async def test_parallel_hits_never_pass_the_limit(store: LimitStore) -> None:
    bucket = Bucket("rate:parallel", "key", 10, 60.0)

    decisions = await asyncio.gather(*(store.hit([bucket]) for _ in range(40)))

    assert sum(decision.allowed for decision in decisions) == 10


async def test_unreachable_redis_lets_requests_through(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisLimitStore(f"redis://127.0.0.1:{free_port()}/0", prefix=unique_redis_prefix())
    bucket = Bucket("rate:down", "key", 1, 60.0)
    try:
        decisions = [await store.hit([bucket]) for _ in range(3)]
        leased = await store.acquire_lease("leases:down", 1, "a", 60)
        counted = await store.add_capped("counter:down", 5, 1, 60)
    finally:
        await store.aclose()

    assert all(decision.allowed for decision in decisions)
    assert leased is True
    assert counted.accepted is True
    assert store.failures == 5
    warnings = [record for record in caplog.records if "Redis failed" in record.getMessage()]
    assert len(warnings) == 1
