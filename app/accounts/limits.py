"""Rate-limit state: request rates, concurrency leases and capped counters.

Request rates use GCRA (the generic cell rate algorithm): each bucket stores one timestamp, the
theoretical arrival time (TAT) of the next request. A limit of `limit` requests per `window_s`
lets a burst of `limit` through at once and then one request every `window_s / limit`
seconds. Several buckets (a key's and its account's) are checked together, and a request
spends from all of them only when all allow it.

Two stores implement the same operations: `MemoryLimitStore` for one process, and
`RedisLimitStore`, whose Lua scripts make each operation atomic and read Redis's clock, so
every replica shares the same state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

MEMORY_PRUNE_EVERY = 1000
REDIS_TIMEOUT_S = 1.0
FAILURE_WARNING_INTERVAL_S = 60.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bucket:
    """A rate limit of `limit` requests per `window_s` seconds, kept under `key`."""

    key: str
    policy: str
    limit: int
    window_s: float

    @property
    def interval_s(self) -> float:
        return self.window_s / self.limit


@dataclass(frozen=True)
class BucketState:
    """A bucket's state after a request: `remaining` requests now, full again in `reset_s`."""

    policy: str
    limit: int
    window_s: float
    remaining: int
    reset_s: float


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after_s: float
    states: tuple[BucketState, ...]


@dataclass(frozen=True)
class CounterResult:
    """Whether an addition fitted under the cap, and the counter's value afterwards."""

    accepted: bool
    value: int


class LimitStore(Protocol):
    """Shared state of every limit; each method is atomic."""

    async def hit(self, buckets: Sequence[Bucket]) -> RateDecision:
        """Spend one request from every bucket, or from none when one of them is empty."""
        ...

    async def acquire_lease(self, key: str, limit: int, lease_id: str, ttl_s: float) -> bool:
        """Take one of `limit` leases under `key` for `ttl_s` seconds; False when all are taken."""
        ...

    async def release_lease(self, key: str, lease_id: str) -> None: ...

    async def add_capped(self, key: str, amount: int, cap: int, ttl_s: float) -> CounterResult:
        """Add `amount` to a counter unless that passes `cap`; the counter expires after `ttl_s`."""
        ...

    async def read_counter(self, key: str) -> int: ...

    async def aclose(self) -> None: ...


def _decide(
    buckets: Sequence[Bucket], tats: Sequence[float], now: float
) -> tuple[RateDecision, list[float]]:
    """Apply GCRA to every bucket; return the decision and the TATs to store if allowed."""
    new_tats = [
        max(tat, now) + bucket.interval_s for bucket, tat in zip(buckets, tats, strict=True)
    ]
    retry_after_s = 0.0
    for bucket, new_tat in zip(buckets, new_tats, strict=True):
        retry_after_s = max(retry_after_s, new_tat - now - bucket.window_s)
    allowed = retry_after_s <= 0
    effective = new_tats if allowed else [max(tat, now) for tat in tats]
    states = tuple(
        BucketState(
            policy=bucket.policy,
            limit=bucket.limit,
            window_s=bucket.window_s,
            remaining=max(
                0, math.floor((bucket.window_s - (tat - now)) / bucket.interval_s + 1e-9)
            ),
            reset_s=max(0.0, tat - now),
        )
        for bucket, tat in zip(buckets, effective, strict=True)
    )
    return RateDecision(
        allowed=allowed, retry_after_s=max(0.0, retry_after_s), states=states
    ), new_tats


class MemoryLimitStore:
    """Limits for one process. Every operation runs without awaiting, so each is atomic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, tuple[float, float]] = {}  # key -> (TAT, forget after)
        self._leases: dict[str, dict[str, float]] = {}  # key -> lease id -> expiry
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (value, expiry)
        self._operations = 0

    async def hit(self, buckets: Sequence[Bucket]) -> RateDecision:
        now = self._clock()
        self._prune_now_and_then(now)
        tats = [self._tats.get(bucket.key, (now, now))[0] for bucket in buckets]
        decision, new_tats = _decide(buckets, tats, now)
        if decision.allowed:
            for bucket, tat in zip(buckets, new_tats, strict=True):
                self._tats[bucket.key] = (tat, tat)
        return decision

    async def acquire_lease(self, key: str, limit: int, lease_id: str, ttl_s: float) -> bool:
        now = self._clock()
        leases = self._leases.setdefault(key, {})
        for expired in [lease for lease, expiry in leases.items() if expiry <= now]:
            del leases[expired]
        if len(leases) >= limit:
            return False
        leases[lease_id] = now + ttl_s
        return True

    async def release_lease(self, key: str, lease_id: str) -> None:
        leases = self._leases.get(key)
        if leases is None:
            return
        leases.pop(lease_id, None)
        if not leases:
            del self._leases[key]

    async def add_capped(self, key: str, amount: int, cap: int, ttl_s: float) -> CounterResult:
        now = self._clock()
        value, expiry = self._counters.get(key, (0, now + ttl_s))
        if expiry <= now:
            value, expiry = 0, now + ttl_s
        if value + amount > cap:
            return CounterResult(accepted=False, value=value)
        self._counters[key] = (value + amount, expiry)
        return CounterResult(accepted=True, value=value + amount)

    async def read_counter(self, key: str) -> int:
        value, expiry = self._counters.get(key, (0, 0.0))
        return value if expiry > self._clock() else 0

    async def aclose(self) -> None:
        return None

    def _prune_now_and_then(self, now: float) -> None:
        """Forget full buckets and expired counters every MEMORY_PRUNE_EVERY operations."""
        self._operations += 1
        if self._operations % MEMORY_PRUNE_EVERY:
            return
        self._tats = {key: value for key, value in self._tats.items() if value[1] > now}
        self._counters = {key: value for key, value in self._counters.items() if value[1] > now}


# KEYS: one per bucket. ARGV: per bucket its interval and window in microseconds.
# Returns {allowed, retry_after_us, remaining_1, reset_us_1, remaining_2, reset_us_2, ...}.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local count = #KEYS
local tats, new_tats = {}, {}
local retry_after = 0
for i = 1, count do
  local interval = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  new_tats[i] = tat + interval
  local wait = new_tats[i] - now - window
  if wait > retry_after then retry_after = wait end
end
local allowed = 0
if retry_after <= 0 then allowed = 1 end
local result = {allowed, retry_after}
for i = 1, count do
  local interval = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local tat = tats[i]
  if allowed == 1 then
    tat = new_tats[i]
    redis.call('SET', KEYS[i], tat, 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  local remaining = math.floor((window - (tat - now)) / interval)
  if remaining < 0 then remaining = 0 end
  result[#result + 1] = remaining
  result[#result + 1] = tat - now
end
return result
"""

# KEYS[1]: a sorted set of lease ids scored by expiry. ARGV: limit, lease id, ttl in ms.
ACQUIRE_LEASE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS[1]: the counter. ARGV: amount, cap, ttl in ms. Returns {accepted, value}.
ADD_CAPPED_SCRIPT = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if value + amount > tonumber(ARGV[2]) then return {0, value} end
value = redis.call('INCRBY', KEYS[1], amount)
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3])) end
return {1, value}
"""


class RedisLimitStore:
    """Limits shared by every replica, in Redis. Keys start with `prefix`.

    When Redis cannot be reached, every limit lets the request through (fail open) and a
    warning is logged at most once a minute. Credits live in the database and stay exact, so an
    outage of the limit store need not stop the API.
    """

    def __init__(self, url: str, *, prefix: str = "visioncraft:") -> None:
        import redis.asyncio as redis  # imported only when REDIS_URL is set

        self._prefix = prefix
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self._errors = (redis.RedisError, OSError)
        self._gcra = self._client.register_script(GCRA_SCRIPT)
        self._acquire = self._client.register_script(ACQUIRE_LEASE_SCRIPT)
        self._add_capped = self._client.register_script(ADD_CAPPED_SCRIPT)
        self.failures = 0
        self._warned_at: float | None = None

    async def hit(self, buckets: Sequence[Bucket]) -> RateDecision:
        arguments: list[int] = []
        for bucket in buckets:
            arguments += [round(bucket.interval_s * 1e6), round(bucket.window_s * 1e6)]
        try:
            reply = await self._gcra(
                keys=[self._prefix + bucket.key for bucket in buckets], args=arguments
            )
        except self._errors as error:
            self._record_failure("a rate limit", error)
            return _decide(buckets, [0.0] * len(buckets), 0.0)[0]
        states = tuple(
            BucketState(
                policy=bucket.policy,
                limit=bucket.limit,
                window_s=bucket.window_s,
                remaining=int(reply[2 + 2 * index]),
                reset_s=max(0.0, int(reply[3 + 2 * index]) / 1e6),
            )
            for index, bucket in enumerate(buckets)
        )
        return RateDecision(
            allowed=int(reply[0]) == 1, retry_after_s=max(0.0, int(reply[1]) / 1e6), states=states
        )

    async def acquire_lease(self, key: str, limit: int, lease_id: str, ttl_s: float) -> bool:
        try:
            reply = await self._acquire(
                keys=[self._prefix + key], args=[limit, lease_id, math.ceil(ttl_s * 1000)]
            )
        except self._errors as error:
            self._record_failure("a concurrency lease", error)
            return True
        return int(reply) == 1

    async def release_lease(self, key: str, lease_id: str) -> None:
        try:
            await self._client.zrem(self._prefix + key, lease_id)
        except self._errors as error:  # the lease expires by itself after its ttl
            self._record_failure("a lease release", error)

    async def add_capped(self, key: str, amount: int, cap: int, ttl_s: float) -> CounterResult:
        try:
            reply = await self._add_capped(
                keys=[self._prefix + key], args=[amount, cap, math.ceil(ttl_s * 1000)]
            )
        except self._errors as error:
            self._record_failure("a capped counter", error)
            return CounterResult(accepted=True, value=0)
        return CounterResult(accepted=int(reply[0]) == 1, value=int(reply[1]))

    async def read_counter(self, key: str) -> int:
        try:
            value = await self._client.get(self._prefix + key)
        except self._errors as error:
            self._record_failure("a counter read", error)
            return 0
        return int(value) if value is not None else 0

    async def ping(self) -> None:
        """Make one round trip to Redis; raise the client's error when it fails."""
        await self._client.ping()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _record_failure(self, operation: str, error: BaseException) -> None:
        self.failures += 1
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < FAILURE_WARNING_INTERVAL_S:
            return
        self._warned_at = now
        logger.warning(
            "Redis failed during %s (%s: %s); limits let requests through until it is back "
            "(%s failures so far)",
            operation,
            type(error).__name__,
            error,
            self.failures,
        )
