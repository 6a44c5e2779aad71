"""Scorers for trace rows: a registry of named factories (see `registry`) and one module per scorer family.

rules: format, truncated, length, repetition       answers: answer_match, self_consistency
dedup: near_duplicate                              embedding: embedding_gain (embedders in `embedders`)
judge: llm_judge
"""

from distill.scoring import answers, dedup, embedding, judge, rules  # noqa: F401  (registers the scorers)
from distill.scoring.registry import SCORERS, build_scorer, register

__all__ = ["SCORERS", "build_scorer", "register"]
