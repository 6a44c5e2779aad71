"""The scorer registry: name -> factory. A factory takes the scorer's parameters from `score.yaml` and returns a scorer.

A scorer is a pure, batched function `scorer(rows: list[dict]) -> list[value]`: one value per row, same order, where a
value is a float (or int), None when the scorer does not apply to that row (a task without a gold answer, a failed
teacher row), or a small dict of floats. Scorers never mutate rows. Scorers that need the whole run also offer a
bounded-memory protocol that `distill score` uses: `features`/`combine` (self-consistency across an example's samples,
near-duplicate clusters) or `pool_features`/`score_chunk` (embedding_gain's in-batch candidates); called on a list,
they compute the same values in memory. A plain function that is neither row-local nor one of these gets every row.

    from distill.scoring import build_scorer
    lengths = build_scorer("length", tokenizer="/ckpt/student")(rows)
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable

Scorer = Callable[[list[dict]], list]
SCORERS: dict[str, Callable[..., Scorer]] = {}

# Run-level values the `score` stage offers to factories that ask for them by parameter name (never set per scorer:
# the pixel budget is score's own `min_pixels` / `max_pixels`, set once for the whole pipeline).
CONTEXT_KEYS = ("image_root", "work_dir", "min_pixels", "max_pixels")


def register(name: str):
    """Decorator: register a scorer factory under `name` (names are unique)."""

    def deco(factory: Callable[..., Scorer]):
        if name in SCORERS:
            raise ValueError(f"scorer {name!r} registered twice")
        SCORERS[name] = factory
        return factory

    return deco


def check_params(name: str, params: dict) -> None:
    """ValueError unless `name` is a registered scorer taking every key of `params` (and given its required ones),
    each of the type its factory's annotation states (`n: 2.5` for an int is an error)."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(sorted(SCORERS))}")
    sig = inspect.signature(SCORERS[name])
    accepted = [p for p in sig.parameters if p not in CONTEXT_KEYS]
    if run_level := sorted(set(params) & set(CONTEXT_KEYS)):
        raise ValueError(f"scorer {name!r}: {', '.join(run_level)} is set once for the whole stage (score's own "
                         "key, which `distill run` takes from the pipeline recipe), not per scorer")  # fmt: skip
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"scorer {name!r}: unknown parameter(s) {unknown}; accepted: {accepted}")
    missing = [p.name for p in sig.parameters.values() if p.default is p.empty and p.name not in params]
    if missing:
        raise ValueError(f"scorer {name!r}: missing required parameter(s) {missing}")
    from distill.configs import check_value  # the factory's annotations type its parameters, as fields type configs

    try:
        hints = typing.get_type_hints(SCORERS[name])
    except Exception:  # an annotation that does not resolve: leave the values to the factory
        hints = {}
    for key, value in params.items():
        if key in hints and not (value is None and sig.parameters[key].default is None):
            check_value(value, hints[key], f"scorer {name!r}: {key}")


def build_scorer(name: str, context: dict | None = None, **params) -> Scorer:
    """The scorer `name` built with `params`; ValueError naming the known scorers / accepted parameters otherwise.

    `context` holds run-level values (CONTEXT_KEYS); each is passed only to factories with a parameter of that name.
    """
    check_params(name, params)
    sig = inspect.signature(SCORERS[name])
    extra = {k: v for k, v in (context or {}).items() if k in sig.parameters and k not in params}
    return SCORERS[name](**params, **extra)


def trace_text(row: dict, part: str = "raw") -> str | None:
    """The row's trace part ('raw' | 'think' | 'final'), or None when the row has no usable trace: a failed teacher
    row (generate writes empty strings there) or a row without a `trace` object."""
    if row.get("status") == "failed":
        return None
    trace = row.get("trace")
    if not isinstance(trace, dict):
        return None
    text = trace.get(part)
    return text if isinstance(text, str) else None
