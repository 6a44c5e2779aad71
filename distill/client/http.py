"""Async client for OpenAI-compatible chat completions (vLLM, SGLang, OpenAI, `distill serve`).

Why not the `openai` SDK: the teacher stage is client-bound at scale, and the SDK spends ~10x the client CPU per
request. Measured with `benchmarks/teacher_throughput.py` (0.2 s server, 128 in flight, limit 640 req/s, 2 cores):
AsyncOpenAI + semaphore 0.79 of the limit for text and 0.71 with one image per request at 1.4-1.8 ms CPU per request;
this aiohttp + orjson client 0.95 / 0.94 at 0.11-0.16 ms (docs/environment.md saw the SDK lower still, 0.07-0.3).
So we speak the same wire format directly:
POST `{base_url}/chat/completions` with `{"model", "messages", **sampling}` and `Authorization: Bearer <key>`; `tests/test_teacher_client.py` checks the
SDK and this client send and read the same shapes.

Faults: 408/409/429/5xx, timeouts, dropped connections, malformed JSON and empty `choices` are retried with exponential
backoff and full jitter, honouring `Retry-After`; other 4xx fail at once. A 429 halves the concurrency window (once per
window) and successes grow it back by ~1 per window (AIMD). Requests go to the least-busy `base_url`; one that drops
connections rests briefly. `finish_reason == "length"` -> status `truncated`. The key is read from the env var named
by `api_key_env` and scrubbed from every error message.

A 200 whose body is not a chat completion of the documented shape (content / reasoning a string or null, usage
counts integers) is a retried fault, never an answer: the journal only ever holds answers the final write can use.
A teacher that is not there fails the run fast instead of failing every row slowly: `probe()` asks `GET /models`
of every base URL first (connect timeout `connect_timeout_s`, answer within `probe_timeout_s`; any HTTP status
counts as alive: a host that accepts and never answers fails here), and a circuit breaker stops the run after
`breaker_failures` consecutive connection failures (refused, reset, DNS, connect timeout) with no HTTP answer in
between. Read timeouts alone do not trip it: after `breaker_failures` of them in a row, `/models` is asked again, and
only a teacher that does not answer that either (hung, stopped) stops the run; one that answers is busy, not gone.
Both raise `TeacherUnreachable` (a ConnectionError) with one line that names the URLs and the last error.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable, Iterable

import aiohttp
import orjson

from distill.client.config import ClientConfig  # noqa: F401 (its home before the config parts; callers import it here)
from distill.client.limiter import AdaptiveLimiter
from distill.urls import redact_url

RETRY_STATUSES = {408, 409, 429}


class TeacherUnreachable(ConnectionError):
    """No teacher answers: every base URL refused/timed out, or the circuit breaker tripped. str() is one line."""


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _usage(data: dict) -> dict | None:
    u = data.get("usage") or {}
    if not isinstance(u, dict):
        return None
    counts = {k: u.get(k) or 0 for k in ("prompt_tokens", "completion_tokens")}
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 2**53 for v in counts.values()):
        return None
    return {k: int(v) for k, v in counts.items()}


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def failed_result(reason: str, attempts: int) -> dict:
    return {"status": "failed", "error": reason, "content": None, "reasoning_content": None, "finish_reason": None,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0}, "attempts": attempts}  # fmt: skip


def parse_response(raw: bytes) -> tuple[dict | None, str | None]:
    """(result, None) for a usable chat completion body, else (None, retryable reason)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, f"malformed JSON response ({len(raw)} bytes)"
    choices = data.get("choices") if isinstance(data, dict) else None
    if choices is not None and not isinstance(choices, list):
        return None, f"response choices is a {_kind(choices)}, not a list"
    if not choices or not isinstance(choices[0], dict):
        return None, "response has no choices"
    choice = choices[0]
    msg = choice.get("message") or {}
    if not isinstance(msg, dict):
        return None, f"response message is a {_kind(msg)}, not an object"
    content, reasoning = msg.get("content"), msg.get("reasoning_content") or msg.get("reasoning")
    # Checked here, before anything is journaled: a number or an object as content would be stored as an answer and
    # break every later read of the journal.
    for name, value in (("content", content), ("reasoning_content", reasoning)):
        if value is not None and not isinstance(value, str):
            return None, f"response {name} is a {_kind(value)}, not a string"
    if content is None and not reasoning:
        return None, "response message has no content"
    finish, model, usage = choice.get("finish_reason"), data.get("model"), _usage(data)
    if finish is not None and not isinstance(finish, str):
        return None, f"response finish_reason is a {_kind(finish)}, not a string"
    if usage is None:
        return None, "response usage counts are not non-negative integers"
    return {"status": "truncated" if finish == "length" else "ok", "model": model if isinstance(model, str) else None,
            "content": content, "reasoning_content": reasoning, "finish_reason": finish, "usage": usage}, None  # fmt: skip


class TeacherClient:
    """`async with TeacherClient(cfg) as c: await c.complete(body)` / `await c.run(items, on_result)`."""

    def __init__(self, config: ClientConfig):
        self.config = config
        self._key = config.api_key()
        self.limiter = AdaptiveLimiter(config.max_concurrency, config.min_concurrency)
        self._busy = dict.fromkeys(config.base_urls, 0)
        self._rest_until = dict.fromkeys(config.base_urls, 0.0)
        self._turn = 0
        self.retries = 0
        self._streak, self._last_transport_error = 0, ""  # consecutive transport failures (circuit breaker)
        self._timeouts, self._rechecking = 0, False  # consecutive read timeouts; a /models recheck in flight
        self.tripped: TeacherUnreachable | None = None
        self._sleep = asyncio.sleep  # tests swap in a recorder to check backoff delays without waiting
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> TeacherClient:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        # limit=0: the AIMD window, not the connector, bounds concurrency; keep-alive connections are reused.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s, sock_connect=self.config.connect_timeout_s)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    def _scrub(self, text: str) -> str:
        return redact_url(text.replace(self._key, "***") if self._key else text)

    def _pick(self, avoid: str | None) -> str:
        now, urls = time.monotonic(), self.config.base_urls
        up = [u for u in urls if self._rest_until[u] <= now and u != avoid] or [u for u in urls if u != avoid] or urls
        self._turn += 1
        return min(up, key=lambda u: (self._busy[u], (urls.index(u) - self._turn) % len(urls)))

    async def probe(self) -> None:
        """Ask `GET /models` of every base URL; TeacherUnreachable if none answers (any HTTP status is an answer).
        Unreachable ones among reachable ones only rest (a warning, not a failure)."""
        timeout = aiohttp.ClientTimeout(total=self.config.probe_timeout_s, sock_connect=self.config.connect_timeout_s)

        async def one(url: str) -> str | None:
            try:
                async with self._session.get(url + "/models", timeout=timeout) as resp:
                    await resp.read()
                    return None
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as e:
                return self._transport_error(e, self.config.probe_timeout_s)

        errors = dict(zip(self.config.base_urls, await asyncio.gather(*map(one, self.config.base_urls)), strict=True))
        down = {u: e for u, e in errors.items() if e is not None}
        if len(down) == len(errors):
            raise TeacherUnreachable(
                "no teacher answers: " + "; ".join(f"{redact_url(u)}: {e}" for u, e in down.items())
            )
        for url in down:
            self._rest_until[url] = time.monotonic() + 30.0

    def _transport_error(self, e: BaseException, total_s: float) -> str:
        if isinstance(e, aiohttp.ConnectionTimeoutError):
            return f"connect timeout after {self.config.connect_timeout_s:g} s"
        if isinstance(e, asyncio.TimeoutError):
            return f"timeout after {total_s:g} s"
        return self._scrub(f"connection error: {type(e).__name__}: {e}")

    def _transport_failed(self, error: str) -> None:
        """Count a connection failure; trip the breaker at `breaker_failures` in a row."""
        self._streak += 1
        self._last_transport_error = error
        limit = self.config.breaker_failures
        if limit and self._streak >= limit and self.tripped is None:
            self.tripped = TeacherUnreachable(
                f"teacher unreachable: {self._streak} consecutive requests could not connect to "
                f"{redact_url(', '.join(self.config.base_urls))} (last: {error}); stopping the run (answers so far are "
                "journaled)"
            )

    async def _recheck(self, error: str) -> None:
        """After `breaker_failures` read timeouts in a row with no answer in between: busy, or gone? Ask `GET /models`
        again; a teacher that answers it is busy (the run goes on), one that does not (a hung or stopped process, a
        host that dropped off after the start) trips the breaker instead of costing timeout x retries per row."""
        if self._rechecking or self.tripped is not None:
            return
        self._rechecking, n = True, self._timeouts
        try:
            await self.probe()
            self._timeouts = 0
        except TeacherUnreachable as e:
            self.tripped = TeacherUnreachable(
                f"teacher hangs: {n} consecutive requests got no answer (last: {error}) and {e}; stopping the run "
                "(answers so far are journaled)"
            )
        finally:
            self._rechecking = False

    async def _attempt(self, url: str, payload: bytes, headers: dict) -> tuple[dict | None, str, float | None, bool]:
        """(result, error, retry_after, retryable) of one POST."""
        try:
            async with self._session.post(url + "/chat/completions", data=payload, headers=headers) as resp:
                raw = await resp.read()
                self._streak = self._timeouts = 0  # the server answered: whatever the status, it is there
                if resp.status == 200:
                    result, err = parse_response(raw)
                    return result, err or "", None, True
                retryable = resp.status in RETRY_STATUSES or resp.status >= 500
                detail = raw[:300].decode("utf-8", "replace").strip()
                return None, f"HTTP {resp.status}: {detail}", retry_after_s(resp.headers.get("Retry-After")), retryable
        except (asyncio.TimeoutError, aiohttp.ClientError) as e:  # refused, reset, disconnected, DNS, timeouts
            read_timeout = isinstance(e, asyncio.TimeoutError) and not isinstance(e, aiohttp.ConnectionTimeoutError)
            if not read_timeout:
                self._rest_until[url] = time.monotonic() + min(30.0, 1.0 + self.config.backoff_base_s)
            err = self._transport_error(e, self.config.timeout_s)
            if not read_timeout:  # a slow answer is a busy teacher, not an absent one: only connection failures count
                self._transport_failed(err)
            else:
                self._timeouts += 1
                if self.config.breaker_failures and self._timeouts >= self.config.breaker_failures:
                    await self._recheck(err)
            return None, err, None, True
        except Exception as e:  # anything else is a bug or a bad request on our side: fail this row, keep the run
            return None, f"client error: {type(e).__name__}: {e}", None, False

    async def complete(self, body: dict, key: str | None = None) -> dict:
        """One chat completion with retries. Returns parse_response's dict, or {"status": "failed", "error", ...}."""
        cfg, payload = self.config, orjson.dumps(body)
        # lets servers and logs correlate a request with its journal key; vLLM and OpenAI ignore it
        headers = {"X-Distill-Content-Key": key} if key else {}
        url, errors = None, []
        for attempt in range(cfg.max_retries + 1):
            if self.tripped is not None:
                raise self.tripped
            url = self._pick(avoid=url if len(errors) else None)
            epoch = await self.limiter.acquire()
            self._busy[url] += 1
            try:
                result, err, retry_after, retryable = await self._attempt(url, payload, headers)
            finally:
                self._busy[url] -= 1
                self.limiter.release()
            if result is not None:
                self.limiter.on_success()
                return {**result, "error": None, "attempts": attempt + 1}
            err = self._scrub(err)
            errors.append(err)
            if err.startswith("HTTP 429"):
                self.limiter.on_throttle(epoch)
            if not retryable or attempt == cfg.max_retries:
                break
            self.retries += 1
            if retry_after is not None:
                delay = min(retry_after, cfg.retry_after_max_s) * random.uniform(1.0, 1.2)
            else:  # full jitter: spreads retries of requests that failed together
                delay = random.uniform(0.5, 1.0) * min(cfg.backoff_max_s, cfg.backoff_base_s * 2**attempt)
            await self._sleep(delay)
        if self.tripped is not None:
            raise self.tripped
        return failed_result(f"failed after {len(errors)} attempt(s): {errors[-1]}", len(errors))

    async def run(self, items: Iterable[tuple[str, dict | Callable[[], dict]]], on_result) -> None:
        """Send every (key, body or body factory) with `max_concurrency` workers; `on_result(key, result)` per item.

        A factory runs in a thread (image encoding stays off the event loop); if it raises, the item fails with the
        reason and nothing is sent. Raises TeacherUnreachable once the circuit breaker trips (workers stop pulling).
        """
        it = iter(items)
        loop = asyncio.get_running_loop()

        async def worker():
            for key, body in it:  # a shared iterator: each worker pulls the next item
                if self.tripped is not None:
                    return
                if callable(body):
                    try:
                        body = await loop.run_in_executor(None, body)
                    except Exception as e:
                        on_result(key, failed_result(f"bad input: {e}", 0))
                        continue
                on_result(key, await self.complete(body, key))

        outcomes = await asyncio.gather(*(worker() for _ in range(self.config.max_concurrency)), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
