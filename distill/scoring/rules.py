"""Rule scorers over the trace text: `format`, `truncated`, `length`, `repetition`.

Each is cheap and per-row; together they must run at >= 20k rows/s on one core for ~1 KB traces
(benchmarks/score_throughput.py), so the hot loops use str methods and C-level set/zip instead of regexes, and
`length` counts tokens through a per-chunk cache (`token_count.TokenCounter`, exact).
"""

from __future__ import annotations

from distill.scoring.registry import register, trace_text

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def format_ok(raw: str, require_think: bool = True) -> bool:
    """True when `raw` has exactly one `<think>` before exactly one `</think>`, nothing but whitespace before the
    opening tag, a non-empty think part and a non-empty final part. Without `require_think`, a trace with no tags
    at all passes when it is non-empty."""
    n_open, n_close = raw.count(THINK_OPEN), raw.count(THINK_CLOSE)
    if n_open == 0 and n_close == 0 and not require_think:
        return bool(raw.strip())
    if n_open != 1 or n_close != 1:  # missing, unclosed, nested or repeated tags
        return False
    a, b = raw.index(THINK_OPEN), raw.index(THINK_CLOSE)
    if b < a or raw[:a].strip():
        return False
    return bool(raw[a + len(THINK_OPEN) : b].strip()) and bool(raw[b + len(THINK_CLOSE) :].strip())


@register("format")
def make_format(require_think: bool = True, part: str = "raw"):
    """1.0 when the trace is well formed (see `format_ok`), else 0.0; None for rows without a trace."""

    def score(rows: list[dict]) -> list:
        out = []
        for row in rows:
            text = trace_text(row, part)
            out.append(None if text is None else float(format_ok(text, require_think)))
        return out

    return score


@register("truncated")
def make_truncated():
    """1.0 when the teacher stopped on its token limit, else 0.0; None for failed rows (no completion at all).

    Truncated means status 'truncated' (generate maps finish_reason 'length' to it), a `finish_reason` of 'length'
    kept on the row or its teacher block, or completion tokens that reached `teacher.sampling.max_tokens`.
    """

    def one(row: dict):
        status = row.get("status")
        if status == "failed":
            return None
        teacher = row.get("teacher") or {}
        if status == "truncated" or "length" in (row.get("finish_reason"), teacher.get("finish_reason")):
            return 1.0
        max_tokens = (teacher.get("sampling") or {}).get("max_tokens")
        used = (row.get("usage") or {}).get("completion_tokens")
        if isinstance(max_tokens, int) and isinstance(used, int) and used >= max_tokens:
            return 1.0
        return 0.0

    return lambda rows: [one(r) for r in rows]


@register("length")
def make_length(tokenizer: str, part: str = "raw", batch_size: int = 8192):
    """Number of tokens of the trace `part` under the tokenizer saved at `tokenizer` (a checkpoint or tokenizer
    directory; recipes point it at the student's, whose context the trace must fit). None for rows without a trace.
    Counts are exact; `TokenCounter` makes them fast (see distill/scoring/token_count.py)."""
    from transformers import AutoTokenizer

    from distill.scoring.token_count import TokenCounter

    backend = getattr(AutoTokenizer.from_pretrained(tokenizer), "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"length: {tokenizer} has no fast (Rust) tokenizer; batched counting needs one")
    count = TokenCounter(backend)

    def score(rows: list[dict]) -> list:
        texts = [trace_text(r, part) for r in rows]
        present = [i for i, t in enumerate(texts) if t is not None]
        out: list = [None] * len(rows)
        for start in range(0, len(present), batch_size):
            idx = present[start : start + batch_size]
            for i, n in zip(idx, count([texts[i] for i in idx]), strict=False):
                out[i] = n
        return out

    return score


def repetition_ratio(text: str, n: int = 4) -> float:
    """Share of the text's word n-grams that repeat an earlier one: 0.0 = no repeats, -> 1.0 for a degenerate loop.

    "a b c d a b c d" with n=4 has 5 n-grams of which 4 are distinct: 1 - 4/5 = 0.2. Texts shorter than n words: 0.0.
    """
    words = text.lower().split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    return 1.0 - len(set(zip(*(words[i:] for i in range(n)), strict=False))) / total


@register("repetition")
def make_repetition(n: int = 4, part: str = "raw"):
    """`repetition_ratio` of the trace `part` over word `n`-grams; None for rows without a trace."""
    if n < 1:
        raise ValueError("repetition: n must be >= 1")

    def score(rows: list[dict]) -> list:
        out = []
        for row in rows:
            text = trace_text(row, part)
            out.append(None if text is None else repetition_ratio(text, n))
        return out

    return score
