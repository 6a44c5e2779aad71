"""`GET /metrics` of `distill serve`: Prometheus text format, as vLLM serves it (scrape it with Prometheus, or read it
with `curl -s http://127.0.0.1:PORT/metrics`).

    distill_serve_requests_total{model, outcome}        outcome: ok, invalid_request, too_large, not_found,
                                                         cancelled, server_stopping, failed, unauthorized
                                                         (401: a wrong or missing API key; model "")
    distill_serve_prompt_tokens_total{model}, distill_serve_completion_tokens_total{model}
    distill_serve_batch_rows (histogram)                 rows per batch started
    distill_serve_queue_depth, distill_serve_running_rows, distill_serve_paused_batches   (gauges)
    distill_serve_request_seconds (histogram)            time from body received to answer, answered requests

Counts the batcher already keeps are read at scrape time by a collector (no second bookkeeping in the hot loop);
request outcomes and latencies are counted by the HTTP handler.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from distill.serve.batcher import BATCH_ROW_BUCKETS


class _BatcherCollector:
    def __init__(self, batcher):
        self.batcher = batcher

    def collect(self):
        stats = self.batcher.stats()
        for name, key in (("prompt_tokens", "prompt_tokens"), ("completion_tokens", "completion_tokens")):
            family = CounterMetricFamily(f"distill_serve_{name}", f"{name.replace('_', ' ')} of answered requests",
                                         labels=["model"])  # fmt: skip
            for model, counts in stats["models"].items():
                family.add_metric([model], counts.get(key, 0))
            yield family
        cumulative, buckets = 0, []
        for bound in BATCH_ROW_BUCKETS:
            cumulative += stats["batch_rows"].get(bound, 0)
            buckets.append((str(bound), cumulative))
        buckets.append(("+Inf", cumulative))
        yield HistogramMetricFamily("distill_serve_batch_rows", "rows (requests x n) per batch started",
                                    buckets=buckets, sum_value=stats["rows"])  # fmt: skip
        for name, key, text in (("queue_depth", "waiting", "requests waiting to start"),
                                ("running_rows", "running_rows", "rows in the batch now generating"),
                                ("paused_batches", "paused_batches", "batches paused for others, waiting to resume")):  # fmt: skip
            yield GaugeMetricFamily(f"distill_serve_{name}", text, value=stats[key])


class ServeMetrics:
    """A private registry per app (tests start several servers in one process)."""

    def __init__(self, batcher):
        self.registry = CollectorRegistry()
        self.requests = Counter("distill_serve_requests", "chat completion requests by outcome",
                                ["model", "outcome"], registry=self.registry)  # fmt: skip
        self.latency = Histogram("distill_serve_request_seconds", "seconds from request body to answer",
                                 ["model"], registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))  # fmt: skip
        self.registry.register(_BatcherCollector(batcher))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
