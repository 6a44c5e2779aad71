"""`near_duplicate`: MinHash-LSH clusters over trace text (datasketch), so `filter` can keep one trace per cluster.

Word n-gram shingles of the lower-cased text -> MinHash signatures (`MinHash.bulk`, numpy over all permutations) ->
an LSH index queried before each insert; candidate pairs are confirmed by their estimated Jaccard similarity, and
union-find joins confirmed pairs into clusters. Deterministic: datasketch's sha1-based hash and a fixed seed.
"""

from __future__ import annotations

import re

from datasketch import MinHash, MinHashLSH
from tqdm import tqdm

from distill.scoring.registry import register, trace_text

_WORD = re.compile(r"\w+")


def shingles(text: str, n: int) -> list[bytes]:
    """Distinct word n-grams of the lower-cased text as bytes (the whole text when it has fewer than n words)."""
    words = _WORD.findall(text.lower())  # punctuation ignored: "square." and "square!" are the same word
    if len(words) < n:
        return [" ".join(words).encode()] if words else []
    return [" ".join(g).encode() for g in set(zip(*(words[i:] for i in range(n)), strict=False))]


def cluster_ids(texts: list[str | None], threshold: float = 0.8, num_perm: int = 128, ngram: int = 3) -> list:
    """For each text, the index of the first text of its near-duplicate cluster (itself when unique); None for
    missing or empty texts. Near duplicate = estimated word-n-gram Jaccard similarity >= `threshold`."""
    idx = [i for i, t in enumerate(texts) if t and t.strip()]
    sets = [shingles(texts[i], ngram) for i in idx]
    sigs = MinHash.bulk(sets, num_perm=num_perm, seed=1)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    parent = {i: i for i in idx}
    sig_of = dict(zip(idx, sigs, strict=False))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, sig in tqdm(zip(idx, sigs, strict=True), total=len(idx), desc="near_duplicate", disable=len(idx) < 20_000):
        for j in lsh.query(sig):  # earlier texts sharing an LSH band with this one
            if sig.jaccard(sig_of[j]) >= threshold:
                ri, rj = find(i), find(j)
                if ri != rj:  # the root is always the smaller index: cluster id = its first member
                    parent[max(ri, rj)] = min(ri, rj)
        lsh.insert(i, sig, check_duplication=False)
    out: list = [None] * len(texts)
    for i in idx:
        out[i] = find(i)
    return out


@register("near_duplicate")
def make_near_duplicate(threshold: float = 0.8, num_perm: int = 128, ngram: int = 3, part: str = "raw"):
    """Cluster id (an int: the 0-based input position of the cluster's first row) of each row's trace `part`;
    rows in the same cluster are near duplicates. None for rows without a trace."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError("near_duplicate: threshold must be in (0, 1]")
    return lambda rows: cluster_ids([trace_text(r, part) for r in rows], threshold, num_perm, ngram)
