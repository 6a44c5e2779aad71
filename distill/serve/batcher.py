"""Dynamic batching for `distill serve`: one background thread gathers concurrent requests and runs them as batched
`generate` calls.

The worker waits for the first request, then keeps collecting until the oldest waiting request's group holds
`max_batch_size` rows (a request counts `n` rows) or `batch_wait_s` has passed since that request arrived. It runs the
oldest request's group (same model and same sampling key, see `SamplingParams.group_key`) and keeps the rest waiting,
so requests that arrive while a batch runs form the next one without further delay. One thread runs every model:
generation saturates the device anyway, and it makes `seed` reproducible (torch's global RNG is seeded per batch).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field

from distill.serve.chat_request import Choice, SamplingParams
from distill.serve.local_engine import LocalModel, Prepared

log = logging.getLogger(__name__)


class ServerStopping(RuntimeError):
    """The server shut down before this request ran."""


@dataclass
class _Job:
    model: LocalModel
    prepared: Prepared
    params: SamplingParams
    key: tuple
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Owns the worker thread and the counters exposed at `/v1/stats`."""

    def __init__(self, max_batch_size: int = 16, batch_wait_s: float = 0.01):
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="distill-serve-batcher", daemon=True)
        self._stats_lock = threading.Lock()
        self._stats = Counter()
        self._per_model: dict[str, Counter] = {}
        self._largest = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in progress, fail everything still waiting with ServerStopping, and join the thread."""
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, model: LocalModel, prepared: Prepared, params: SamplingParams, request_id: str) -> Future:
        """Queue one request; the future resolves to its list of `n` Choices (or raises)."""
        job = _Job(model, prepared, params, (model.model_id, *params.group_key(request_id)))
        self._queue.put(job)
        return job.future

    def stats(self) -> dict:
        with self._stats_lock:
            return {
                **{
                    k: self._stats[k]
                    for k in ("requests", "batches", "rows", "failed", "prompt_tokens", "completion_tokens")
                },
                "largest_batch_rows": self._largest,
                "waiting": self._queue.qsize(),
                "max_batch_size": self.max_batch_size,
                "batch_wait_ms": self.batch_wait_s * 1000,
                "models": {m: dict(c) for m, c in self._per_model.items()},
            }

    def _run(self) -> None:
        pending: list[_Job] = []
        stopping = False
        while not stopping:
            if not pending:
                job = self._queue.get()
                if job is None:
                    break
                pending.append(job)
            deadline = pending[0].arrived + self.batch_wait_s
            while not stopping:
                rows = sum(j.params.n for j in pending if j.key == pending[0].key)
                timeout = deadline - time.monotonic()
                try:  # wait only while the oldest group is short and young; otherwise just drain what is there
                    job = self._queue.get(timeout=timeout) if rows < self.max_batch_size and timeout > 0 else \
                        self._queue.get_nowait()  # fmt: skip
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                else:
                    pending.append(job)
            batch, rows, rest = [], 0, []
            for job in pending:
                if job.key == pending[0].key and (not batch or rows + job.params.n <= self.max_batch_size):
                    batch.append(job)
                    rows += job.params.n
                else:
                    rest.append(job)
            pending = rest
            self._execute([j for j in batch if j.future.set_running_or_notify_cancel()])  # skip abandoned requests
        for job in pending + self._drain():
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ServerStopping("server is shutting down"))

    def _drain(self) -> list[_Job]:
        jobs = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return jobs
            if job is not None:
                jobs.append(job)

    def _execute(self, batch: list[_Job]) -> None:
        if not batch:
            return
        model = batch[0].model
        try:
            results = model.generate([(j.prepared, j.params) for j in batch])
        except Exception as e:
            if len(batch) > 1:  # one bad request must not fail the others: run each alone
                log.warning("batch of %d on %r failed (%s: %s); retrying one by one", len(batch), model.model_id,
                            type(e).__name__, e)  # fmt: skip
                for job in batch:
                    self._execute_one(job)
                return
            log.exception("generation failed on %r", model.model_id)
            self._count(model.model_id, requests=1, failed=1)
            batch[0].future.set_exception(e)
            return
        self._record(model.model_id, batch, results)
        for job, choices in zip(batch, results, strict=True):
            job.future.set_result(choices)

    def _execute_one(self, job: _Job) -> None:
        try:
            choices = job.model.generate([(job.prepared, job.params)])
        except Exception as e:
            log.exception("generation failed on %r", job.model.model_id)
            self._count(job.model.model_id, requests=1, failed=1)
            job.future.set_exception(e)
            return
        self._record(job.model.model_id, [job], [choices])
        job.future.set_result(choices)

    def _record(self, model_id: str, batch: list[_Job], results: list[list[Choice]]) -> None:
        rows = sum(j.params.n for j in batch)
        self._count(model_id, requests=len(batch), batches=1, rows=rows,
                    prompt_tokens=sum(j.prepared.prompt_tokens for j in batch),
                    completion_tokens=sum(c.completion_tokens for r in results for c in r))  # fmt: skip
        with self._stats_lock:
            self._largest = max(self._largest, rows)

    def _count(self, model_id: str, **counts: int) -> None:
        with self._stats_lock:
            self._stats.update(counts)
            self._per_model.setdefault(model_id, Counter()).update(counts)
