"""embedding_gain's arithmetic on unit vectors: rank, cosine margin and InfoNCE log-probability of the positive.

from distill.scoring.ranking import rank_and_margin
rank_and_margin(np.array([0.9, 0.5, 0.95]))  # (2, -0.05)
"""

from __future__ import annotations

import numpy as np


def rank_and_margin(sims: np.ndarray) -> tuple[int, float]:
    """sims[0] is the positive's similarity, sims[1:] the negatives'. Rank = 1 + negatives scoring >= the positive;
    margin = positive - best negative. sims [0.9, 0.5, 0.95] -> rank 2, margin 0.9 - 0.95 = -0.05."""
    pos, negs = sims[0], sims[1:]
    return 1 + int((negs >= pos).sum()), float(pos - negs.max())


def log_softmax_positive(sims: np.ndarray, temperature: float) -> float:
    """log p(positive) under InfoNCE: sims[0] / t - logsumexp(sims / t). sims [0.8, 0.8], t 0.02 -> -log 2."""
    logits = np.asarray(sims, np.float64) / temperature
    top = logits.max()
    return float(logits[0] - top - np.log(np.exp(logits - top).sum()))


def gain_value(emb: np.ndarray, plan: tuple, temperature: float, objective: str) -> dict | None:
    """embedding_gain's value for one plan (query, query as conditioned, positive, positive as conditioned, negatives,
    negatives as conditioned: row indices of `emb`, unit vectors), or None when a vector is NaN. Without the trace
    every item is alone; with it, each as conditioned (a target-side trace set conditions every candidate that has a
    trace, so the positive is not the only one with extra text)."""
    q, q_cond, pos, pos_cond, negs, negs_cond = plan
    if np.isnan(emb[[q, q_cond, pos, pos_cond, *negs, *negs_cond]]).any():  # an unreadable image (logged)
        return None
    sims_q = emb[[pos, *negs]] @ emb[q]  # without the trace
    sims_t = emb[[pos_cond, *negs_cond]] @ emb[q_cond]  # with the traces, on the side they are about
    rank_q, margin_q = rank_and_margin(sims_q)
    rank_t, margin_t = rank_and_margin(sims_t)
    logp_q, logp_t = log_softmax_positive(sims_q, temperature), log_softmax_positive(sims_t, temperature)
    # Rounded so reruns are byte-identical despite last-bit float noise across BLAS batch shapes.
    value = {
        "rank_query": rank_q,
        "rank_trace": rank_t,
        "margin_query": round(margin_q, 6),
        "margin_trace": round(margin_t, 6),
        "logp_query": round(logp_q, 6),
        "logp_trace": round(logp_t, 6),
        "logp_gain": round(logp_t - logp_q, 6),
        "gain": round(margin_t - margin_q, 6),
        "candidates": len(negs) + 1,
    }
    if objective == "log_softmax":
        value["gain"] = value["logp_gain"]
    return value
