"""AIMD concurrency window for the teacher client: halve on 429 (once per window), grow ~1 per window of successes.

A plain semaphore cannot shrink while permits are out; this counts requests in flight against a float `limit` and
wakes waiters in FIFO order when a slot frees up. The fast path (a free slot) never awaits.
"""

from __future__ import annotations

import asyncio
from collections import deque


class AdaptiveLimiter:
    def __init__(self, max_limit: int, min_limit: int = 1):
        self.max_limit, self.min_limit = max_limit, min_limit
        self.limit = float(max_limit)
        self.in_flight = 0
        self.epoch = 0  # bumped at each decrease: 429s from requests sent before it do not decrease again
        self.decreases = 0
        self._waiters: deque[asyncio.Future] = deque()

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch the request is sent in (pass it to `on_throttle`)."""
        while self.in_flight >= int(self.limit):
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                raise
        self.in_flight += 1
        return self.epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        free = int(self.limit) - self.in_flight
        while free > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1

    def on_success(self) -> None:
        if self.limit < self.max_limit:
            self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)
            self._wake()

    def on_throttle(self, epoch: int) -> None:
        if epoch == self.epoch:
            self.limit = max(float(self.min_limit), self.limit / 2)
            self.epoch += 1
            self.decreases += 1
