"""Per-row decoding for `distill serve`: every row of a batch samples with its own settings and its own generator,
stops on its own, and a batch can pause and resume from its KV cache.

    run = model.begin(jobs); model.advance(run, on_job_done, should_pause)   # repeat until not run.live_rows()

Why per row: HF `generate` takes one temperature/top_p and draws from torch's global RNG, which made seeded requests
run alone (a seed must give the same answer whatever else is in the batch). `RowSampler` draws each row's token with
that row's `torch.Generator` (seeded from the request's `seed` and the choice index) and hands `generate` a one-hot
score row, so greedy decoding picks exactly that token: any mix of greedy, sampled and seeded requests shares a batch.
`RowStop` ends a row at eos (unless it asked for `ignore_eos`), at its own `max_tokens`, or when its request was cancelled (the client went away), reports
each finished request at once (small requests in a batch with a long one do not wait for it), and pauses the whole
batch when `should_pause()` says a much cheaper request is waiting (the batcher decides), so one long request cannot
hold the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, StoppingCriteria

_GOLDEN = 0x9E3779B97F4A7C15  # spreads (seed, choice index) over the 64-bit seed space


@dataclass(eq=False)
class Row:
    """One choice of one request. `job` is the batcher's job (params, cancelled flag, rows)."""

    job: object
    index: int
    generator: torch.Generator
    tokens: list[int] | None = None  # set when the row finishes
    finish: str | None = None  # "stop" | "length" | "cancelled" | "stopping"

    @property
    def done(self) -> bool:
        return self.finish is not None


def row_generator(seed: int | None, index: int, device: str) -> torch.Generator:
    """A generator per row: seeded rows are reproducible whatever they are batched with; others draw a fresh seed."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed((seed + index * _GOLDEN) % 2**64)
    return g


@dataclass(eq=False)
class Running:
    """A batch in flight: its rows, sequences so far, and what resuming needs (KV cache, attention mask, rope deltas)."""

    model: object
    rows: list[Row]
    inputs: dict  # the first call's inputs (prompts, images); afterwards only sequences/mask/cache are used
    prompt_width: int
    sequences: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    cache: object = None
    rope_deltas: torch.Tensor | None = None
    paused_at: float = 0.0
    jobs: list = field(default_factory=list)

    def live_rows(self) -> list[Row]:
        return [r for r in self.rows if not r.done]

    @property
    def generated(self) -> int:
        return 0 if self.sequences is None else self.sequences.shape[1] - self.prompt_width


class RowSampler(LogitsProcessor):
    """Draws each row's next token with its own temperature / top_p / generator; returns one-hot scores."""

    def __init__(self, rows: list[Row]):
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = scores.argmax(dim=-1)
        for i, row in enumerate(self.rows):
            params = row.job.params
            if row.done or params.greedy:
                continue
            logits = scores[i].float() / params.temperature
            if params.top_p < 1.0:  # nucleus: keep the smallest prefix of sorted tokens whose mass reaches top_p
                sorted_logits, order = logits.sort(descending=True)
                mass = sorted_logits.softmax(-1).cumsum(-1)
                drop = mass - sorted_logits.softmax(-1) >= params.top_p  # the token that crosses top_p is kept
                logits = logits.scatter(0, order[drop], float("-inf"))
            chosen[i] = torch.multinomial(logits.softmax(-1), 1, generator=row.generator)[0]
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen[:, None], 0.0)
        return out


class RowStop(StoppingCriteria):
    """Per-row end (eos, own max_tokens, cancelled) and whole-batch pause; calls `on_job_done(job)` as jobs finish."""

    def __init__(self, run: Running, eos_ids: set[int], on_job_done: Callable, should_pause: Callable[[], str | None],
                 min_steps: int):  # fmt: skip
        self.run, self.eos_ids, self.on_job_done = run, eos_ids, on_job_done
        self.should_pause, self.min_steps, self.steps = should_pause, min_steps, 0
        self.eos_token_id = sorted(eos_ids)  # HF pads rows once they are done only when a criterion has this attribute

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.steps += 1
        generated = input_ids.shape[1] - self.run.prompt_width
        last = input_ids[:, -1].tolist()
        finished_jobs = []
        for i, row in enumerate(self.run.rows):
            if row.done:
                continue
            job = row.job
            if last[i] in self.eos_ids and not job.params.ignore_eos:
                row.finish = "stop"
            elif generated >= job.params.max_tokens:
                row.finish = "length"
            elif job.cancelled:
                row.finish = "cancelled"
            if row.done:
                row.tokens = input_ids[i, self.run.prompt_width :].tolist()
                if all(r.done for r in job.rows):
                    finished_jobs.append(job)
        for job in finished_jobs:
            self.on_job_done(job)
        done = torch.tensor([r.done for r in self.run.rows], dtype=torch.bool, device=input_ids.device)
        if not done.all() and self.steps >= self.min_steps and self.should_pause():
            return torch.ones_like(done)  # pause: the batch goes back in line with its cache
        return done
