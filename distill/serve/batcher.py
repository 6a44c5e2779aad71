"""Dynamic batching for `distill serve`: one background thread gathers concurrent requests into batches and runs them
in slices, so no request waits for another one's whole generation.

The worker waits for the first request, then keeps collecting until `max_batch_size` rows (a request counts `n` rows)
of the same model are waiting or `batch_wait_s` has passed since the oldest arrived. Any mix of sampling settings and
seeds shares a batch (per-row sampling, `distill.serve.decode`), and each request is answered the moment its own rows
finish. A batch runs until it is done, except that once it has made `slice_tokens` tokens it yields to a waiting
request that costs at most 1/YIELD_RATIO of its remaining budget (`max_tokens`): it pauses with its KV cache, the
cheap request runs, and it resumes. So a 4-token request waits for at most one slice of an `n=16, max_tokens=4000`
one, not for all of it; requests of similar size never pre-empt each other (round-robin among equals would only
delay all of them to the end), and paused batches resume oldest first. One thread runs every model.

Cancellation: `cancel(job)` (the HTTP client went away) drops a waiting job and stops a running one's rows at the next
token. Shutdown: `shutdown(drain_s)` refuses new jobs with ServerStopping, lets the work in hand finish for up to
`drain_s`, then ends every remaining job with ServerStopping (the server answers 503 `server_stopping`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from distill.serve.chat_request import SamplingParams
from distill.serve.decode import Running
from distill.serve.local_engine import LocalModel, Prepared

log = logging.getLogger(__name__)
BATCH_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
YIELD_RATIO = 4  # a running batch yields to a waiting request whose max_tokens is at most 1/4 of its remaining budget


class ServerStopping(RuntimeError):
    """The server is shutting down and this request did not finish in time."""


@dataclass(eq=False)
class _Job:
    model: LocalModel
    prepared: Prepared
    params: SamplingParams
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    rows: list = field(default_factory=list)


class Batcher:
    """Owns the worker thread and the counters behind `/v1/stats` and `/metrics`."""

    def __init__(self, max_batch_size: int = 16, batch_wait_s: float = 0.01, slice_tokens: int = 16):
        self.max_batch_size, self.batch_wait_s, self.slice_tokens = max_batch_size, batch_wait_s, slice_tokens
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="distill-serve-batcher", daemon=True)
        self._stats_lock = threading.Lock()
        self._stats = Counter()
        self._per_model: dict[str, Counter] = {}
        self._batch_rows = Counter()  # rows per batch started -> count (the /metrics histogram)
        self._largest = 0
        self._pending: list[_Job] = []  # worker-side: taken off the queue, not started
        self._paused: deque[Running] = deque()  # worker-side: batches waiting to resume
        self.running_rows = 0
        self._stopping = False
        self._deadline = float("inf")

    def start(self) -> None:
        self._thread.start()

    def submit(self, model: LocalModel, prepared: Prepared, params: SamplingParams, request_id: str = "") -> _Job:
        """Queue one request; `job.future` resolves to its list of `n` Choices (or raises). ServerStopping when
        the server is shutting down."""
        if self._stopping:
            raise ServerStopping("server is shutting down")
        job = _Job(model, prepared, params)
        self._queue.put(job)
        return job

    def cancel(self, job: _Job) -> None:
        """The client went away: a waiting job is dropped, a running one stops at its next token."""
        if not job.future.done():
            job.cancelled = True
            self._count(job.model.model_id, cancelled=1)

    def shutdown(self, drain_s: float) -> None:
        """Refuse new jobs now; finish what is in hand for up to `drain_s` seconds, then fail the rest."""
        if not self._stopping:
            self._stopping = True
            self._deadline = time.monotonic() + drain_s
            self._queue.put(None)  # wakes an idle worker

    def wait_drained(self, timeout: float) -> None:
        """Block until the worker has answered everything in hand after `shutdown` (at most `timeout` seconds)."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down at once (no drain) and join the thread."""
        self.shutdown(0.0)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def waiting(self) -> int:
        return self._queue.qsize() + len(self._pending)

    def stats(self) -> dict:
        with self._stats_lock:
            return {
                **{
                    k: self._stats[k]
                    for k in (
                        "requests",
                        "batches",
                        "slices",
                        "rows",
                        "failed",
                        "cancelled",
                        "stopped",
                        "prompt_tokens",
                        "completion_tokens",
                    )
                },  # fmt: skip
                "largest_batch_rows": self._largest,
                "waiting": self.waiting(),
                "paused_batches": len(self._paused),
                "running_rows": self.running_rows,
                "batch_rows": dict(self._batch_rows),
                "max_batch_size": self.max_batch_size,
                "batch_wait_ms": self.batch_wait_s * 1000,
                "models": {m: dict(c) for m, c in self._per_model.items()},
            }

    # ---- worker ----

    def _run(self) -> None:
        while True:
            self._take(block=not self._pending and not self._paused and not self._stopping)
            if self._stopping and (time.monotonic() >= self._deadline or not (self._pending or self._paused)):
                break
            head = self._cheap_job(self._paused[0]) if self._paused else (self._pending[0] if self._pending else None)
            if head is not None:
                run = self._form_batch(head)
            elif self._paused:
                run = self._paused.popleft()
            else:
                continue
            if run is not None:
                self._advance(run)
        self._take(block=False)
        leftovers = self._pending + [row.job for run in self._paused for row in run.live_rows()]
        for job in {id(j): j for j in leftovers}.values():
            self._fail(job, ServerStopping("server is shutting down: this request did not finish in time"), "stopped")
        self._pending, self._paused = [], deque()

    def _take(self, block: bool) -> None:
        """Move arrivals from the queue to `_pending` (blocking for the first one when idle)."""
        while True:
            try:
                job = self._queue.get(timeout=0.5) if block else self._queue.get_nowait()
            except queue.Empty:
                if block and not self._stopping:
                    continue
                return
            block = False
            if job is not None:
                self._pending.append(job)

    def _cheap_job(self, run: Running) -> _Job | None:
        """The oldest waiting job that costs at most 1/YIELD_RATIO of `run`'s remaining budget, if any."""
        live = run.live_rows()
        remaining = max(row.job.params.max_tokens for row in live) - run.generated if live else 0
        return next((j for j in self._pending if j.params.max_tokens * YIELD_RATIO <= remaining), None)

    def _form_batch(self, first: _Job) -> Running | None:
        """`first`'s batch: same model, up to max_batch_size rows (first-come), waiting up to batch_wait_s."""
        self._pending.remove(first)
        self._pending.insert(0, first)
        deadline = first.arrived + self.batch_wait_s
        while not self._stopping:
            rows = sum(j.params.n for j in self._pending if j.model is first.model)
            timeout = deadline - time.monotonic()
            if rows >= self.max_batch_size or timeout <= 0 or self._paused:
                break
            try:
                job = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if job is not None:
                self._pending.append(job)
        batch, rows, rest = [], 0, []
        for job in self._pending:
            if job.cancelled or job.future.cancelled():
                job.future.cancel()  # its client went away before it started: nothing to run, nobody to answer
                continue
            if job.model is first.model and (not batch or rows + job.params.n <= self.max_batch_size):
                batch.append(job)
                rows += job.params.n
            else:
                rest.append(job)
        self._pending = rest
        batch = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not batch:
            return None
        try:
            run = first.model.begin(batch)
        except Exception as e:
            for job in batch:
                self._fail(job, e, "failed")
            return None
        with self._stats_lock:
            self._batch_rows[min((b for b in BATCH_ROW_BUCKETS if b >= rows), default=BATCH_ROW_BUCKETS[-1])] += 1
            self._largest = max(self._largest, rows)
        self._count(first.model.model_id, batches=1, rows=rows)
        return run

    def _should_pause(self, run: Running) -> bool:
        """Asked by the running batch after each slice: past the drain deadline, or a much cheaper request waits."""
        if self._stopping and time.monotonic() >= self._deadline:
            return True
        self._take(block=False)  # same thread: arrivals since the batch started become visible here
        return self._cheap_job(run) is not None

    def _advance(self, run: Running) -> None:
        model = run.model
        live = run.live_rows()
        self.running_rows = len(live)
        try:
            model.advance(run, self._finish, lambda: self._should_pause(run), self.slice_tokens)
        except Exception as e:
            log.exception("generation failed on %r", model.model_id)
            for job in {id(r.job): r.job for r in live if not r.job.future.done()}.values():
                self._fail(job, e, "failed")
            return
        finally:
            self.running_rows = 0
        self._count(model.model_id, slices=1)
        if run.live_rows():
            run.paused_at = time.monotonic()
            self._paused.append(run)

    def _finish(self, job: _Job) -> None:
        """Called by the model as soon as every row of `job` is done (mid-generation)."""
        if job.future.done():
            return
        if job.cancelled:
            job.future.set_exception(ServerStopping("cancelled: the client went away"))
            return
        try:
            choices = job.model.choices(job)
        except Exception as e:
            self._fail(job, e, "failed")
            return
        self._count(job.model.model_id, requests=1, prompt_tokens=job.prepared.prompt_tokens,
                    completion_tokens=sum(c.completion_tokens for c in choices))  # fmt: skip
        job.future.set_result(choices)

    def _fail(self, job: _Job, error: Exception, counter: str) -> None:
        if job.future.done():
            return
        if job.future.running() or job.future.set_running_or_notify_cancel():
            self._count(job.model.model_id, **{counter: 1})
            job.future.set_exception(error)

    def _count(self, model_id: str, **counts: int) -> None:
        with self._stats_lock:
            self._stats.update(counts)
            self._per_model.setdefault(model_id, Counter()).update(counts)
