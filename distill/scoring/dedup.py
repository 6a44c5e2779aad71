"""`near_duplicate`: clusters of traces whose word n-gram sets have Jaccard similarity >= a threshold.

    from distill.scoring.dedup import cluster_ids
    cluster_ids(["a b c d", "a b c d", None, "x y z"])   # -> [0, 0, None, 3]

Why not datasketch's MinHashLSH (what this used before) or datatrove / text-dedup: a MinHashLSH query returns every
earlier trace that shares a band bucket, and traces that follow one template (ids and a few words apart) share
buckets en masse, so verification went quadratic (232 rows/s at 200k templated traces). datatrove and text-dedup avoid
that by not verifying at all: any bucket collision is a duplicate and union-find chains the pairs, so a template
family collapses into one cluster; text-dedup also pulls in pyspark. Here, per row and in bounded work:

1. Features (streamed, per chunk of rows; numpy over the whole chunk): distinct word n-grams of the lower-cased text
   (punctuation ignored; a text of fewer than n words is one shingle) hashed to 64 bits (blake2b per distinct word,
   mixed per n-gram); kept per row as a *bottom-k sketch* (the k = `num_perm` smallest 32-bit shingle hashes, the
   whole set when it has <= k shingles) and as LSH band keys of a one-permutation MinHash (k bins, densified by
   rotation; bands x rows from datasketch's optimal parameters for the threshold).
2. Candidates: per band the rows are sorted by band key (stable); a row's candidates are the first row of its bucket
   and the `window` rows just before it in the bucket, so a row sees at most bands x (window + 1) candidates however
   big a template's buckets grow.
3. Clusters without chaining: rows are taken in input order; a row joins the cluster of the earliest candidate's
   leader (a cluster's first row) whose Jaccard with it is >= threshold, else it leads a new cluster. Every member is
   a near duplicate of its leader, never of a chain of others. Jaccard is exact when both rows have <= k shingles
   (the sketch is the whole set), else the bottom-k estimate (of the union's k smallest hashes, the share in both).

Deterministic: fixed hashes and seeds, input order decides leaders. `benchmarks/scale.py` measures 1M templated rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from distill.scoring.registry import register, trace_text

_WORD = re.compile(r"\w+")
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_EMPTY = np.uint32(0xFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 -> uint64, wraps): turns the linear n-gram combination into a good hash."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


_POW = _mix(np.arange(1, 257, dtype=np.uint64))  # per-position byte weights of the word hash


def _words(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every word of every text, in order; words per text). The texts are `\\w+` words joined by
    single spaces, so the hashing runs in numpy over the chunk's bytes: a word's hash mixes the sum of its bytes
    times per-position weights (a linear hash, made uniform by the splitmix finaliser)."""
    enc = [t.encode() for t in texts]
    buf = np.frombuffer(b" ".join(enc) + b" ", np.uint8)
    word = buf != 32
    start = word.copy()
    start[1:] &= ~word[:-1]
    wid = np.cumsum(start)[word] - 1
    starts = np.flatnonzero(start)
    pos = np.flatnonzero(word) - starts[wid]
    with np.errstate(over="ignore"):
        contrib = buf[word].astype(np.uint64) * _POW[pos % len(_POW)]
    hashes = _mix(np.add.reduceat(contrib, np.flatnonzero(start[word])))
    ends = np.cumsum([len(e) + 1 for e in enc])  # byte offset just past each text's separator
    per_text = np.bincount(np.searchsorted(ends, starts, side="right"), minlength=len(texts))
    return hashes, per_text


def shingle_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc index, 32-bit hash) of every distinct word n-gram of each text (`\\w+` words joined by single spaces,
    none empty), sorted by doc then hash."""
    flat, lens = _words(texts)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    docs = np.repeat(np.arange(len(texts)), lens)
    pad = np.concatenate([flat, np.zeros(n, np.uint64)])
    g = np.zeros(len(flat), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):  # position-dependent multipliers: "a b c" != "c b a"
            g = g * np.uint64(0x9E3779B97F4A7C15) + pad[j : j + len(flat)]
    pos = np.arange(len(flat)) - np.repeat(starts, lens)
    valid = pos + n <= np.repeat(lens, lens)
    g, docs = g[valid], docs[valid]
    short = np.flatnonzero((lens > 0) & (lens < n))  # fewer words than n: the whole text is one shingle (rare)
    if len(short):
        extra = np.zeros(len(short), np.uint64)
        with np.errstate(over="ignore"):
            for k, d in enumerate(short):
                for w in flat[starts[d] : starts[d] + lens[d]]:
                    extra[k] = extra[k] * np.uint64(0x9E3779B97F4A7C15) + w
        g, docs = np.concatenate([g, extra + np.uint64(0x632BE59BD9B4E019)]), np.concatenate([docs, short])
    key = np.sort((docs.astype(np.uint64) << np.uint64(32)) | (_mix(g) >> np.uint64(32)))
    keep = np.ones(len(key), bool)
    keep[1:] = key[1:] != key[:-1]  # distinct shingles (np.unique's hash path is slower than sort + diff here)
    key = key[keep]
    return (key >> np.uint64(32)).astype(np.int64), (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)


@dataclass
class Features:
    """Compact per-row features of one chunk: which rows have text, their band keys and bottom-k sketches."""

    rows: int  # rows in the chunk (those without text have no features)
    present: np.ndarray  # chunk positions of rows with text
    bands: np.ndarray  # (len(present), b) uint64
    sketch: np.ndarray  # concatenated sorted uint32 sketches
    lengths: np.ndarray  # sketch length per present row
    full: np.ndarray  # True when the row had more shingles than the sketch holds


def features(texts: list[str | None], num_perm: int, ngram: int, bands: int, rows_per_band: int) -> Features:
    norm = [" ".join(_WORD.findall(t.lower())) if t else "" for t in texts]
    present = np.array([i for i, t in enumerate(norm) if t], np.int64)
    doc, h = shingle_hashes([norm[i] for i in present], ngram)
    counts = np.bincount(doc, minlength=len(present))
    seg = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    rank = np.arange(len(doc)) - seg[doc]
    keep = rank < num_perm
    # One-permutation MinHash: bin by the hash's top bits; hashes are sorted per doc, so a bin's first is its min.
    k = num_perm
    sig = np.full((len(present), k), _EMPTY, np.uint32)
    b = ((h.astype(np.uint64) * np.uint64(k)) >> np.uint64(32)).astype(np.int64)
    flat = doc * k + b
    first = np.ones(len(flat), bool)
    first[1:] = flat[1:] != flat[:-1]
    sig.reshape(-1)[flat[first]] = h[first]
    # Rotation densification: an empty bin takes the next non-empty bin's value (circularly), salted by the distance.
    cols = np.arange(2 * k)
    idx = np.where(np.concatenate([sig, sig], axis=1) != _EMPTY, cols, 2 * k)
    nxt = np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1][:, :k]
    val = np.take_along_axis(sig, nxt % k, axis=1).astype(np.uint64)
    dist = (nxt - cols[:k]).astype(np.uint64)
    dens = np.where(dist == 0, val, _mix(val * np.uint64(0x9E3779B97F4A7C15) + dist)) & np.uint64(0xFFFFFFFF)
    mult = _mix(np.arange(1, rows_per_band + 1, dtype=np.uint64))
    keys = np.empty((len(present), bands), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            part = dens[:, j * rows_per_band : (j + 1) * rows_per_band]
            keys[:, j] = _mix((part * mult).sum(axis=1, dtype=np.uint64) + np.uint64(j))
    return Features(len(texts), present, keys, h[keep], np.minimum(counts, num_perm), counts > num_perm)


def _bottom_k_jaccard(a: np.ndarray, b: np.ndarray, k: int) -> float:
    union = np.union1d(a, b)[:k]
    both = np.intersect1d(a, b, assume_unique=True)
    return float(np.isin(union, both, assume_unique=True).sum()) / len(union)


def _first_match(i, leaders, sketch, starts, lengths, full, threshold: float, k: int) -> int:
    """The first of `leaders` (sorted) whose Jaccard with row i is >= threshold, else i."""
    a = sketch[starts[i] : starts[i + 1]]
    ls = lengths[leaders]
    offs = np.cumsum(ls) - ls
    cat = sketch[np.arange(int(ls.sum())) - np.repeat(offs - starts[leaders], ls)]  # the leaders' sketches, in order
    hit = (a[np.minimum(np.searchsorted(a, cat), len(a) - 1)] == cat).astype(np.int64)
    inter = np.add.reduceat(hit, offs)
    est = inter / (len(a) + ls - inter)  # exact Jaccard when neither set outgrew its sketch
    for j in np.flatnonzero(est >= threshold - 0.15).tolist():
        r, e = int(leaders[j]), float(est[j])
        if full[i] or full[r]:  # the sketches' own Jaccard is near the estimate: only near ones are refined
            e = _bottom_k_jaccard(a, sketch[starts[r] : starts[r + 1]], k)
        if e >= threshold:
            return r
    return i


def combine(chunks: list[Features], threshold: float, num_perm: int, window: int = 8) -> list:
    """Cluster ids (0-based input position of the cluster's first row, None for rows without text) for the rows of
    all `chunks` in order."""
    offsets = np.cumsum([0] + [c.rows for c in chunks])
    present = np.concatenate([c.present + o for c, o in zip(chunks, offsets, strict=False)]) if chunks else np.zeros(0)
    n = len(present)
    out: list = [None] * int(offsets[-1])
    if n == 0:
        return out
    keys = np.concatenate([c.bands for c in chunks])
    sketch = np.concatenate([c.sketch for c in chunks])
    lengths = np.concatenate([c.lengths for c in chunks]).astype(np.int64)
    full = np.concatenate([c.full for c in chunks])
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    orders, positions, heads = [], [], []
    has_cand = np.zeros(n, bool)
    for j in range(keys.shape[1]):
        order = np.argsort(keys[:, j], kind="stable")  # ties keep input order: a bucket's first row is its earliest
        sk = keys[order, j]
        new = np.ones(n, bool)
        new[1:] = sk[1:] != sk[:-1]
        head_sorted = np.maximum.accumulate(np.where(new, np.arange(n), 0))
        pos = np.empty(n, np.int64)
        pos[order] = np.arange(n)
        head = head_sorted[pos]
        has_cand |= pos > head
        orders.append(order)
        positions.append(pos)
        heads.append(head)
    root = np.arange(n)
    todo = np.flatnonzero(has_cand)
    for lo in range(0, len(todo), 16384):  # candidate lists for a block of rows at a time: bounded memory
        block = todo[lo : lo + 16384]
        src, dst = [], []
        for order, pos, head in zip(orders, positions, heads, strict=True):
            p, g = pos[block], head[block]
            for d in range(1, window + 1):
                ok = p - d >= g
                src.append(block[ok])
                dst.append(order[(p - d)[ok]])
            ok = p - window > g
            src.append(block[ok])
            dst.append(order[g[ok]])
        src, dst = np.concatenate(src), np.concatenate(dst)
        by = np.argsort(src, kind="stable")
        src, dst = src[by], dst[by]
        bounds = np.searchsorted(src, block, side="left"), np.searchsorted(src, block, side="right")
        for i, b0, b1 in zip(block.tolist(), bounds[0].tolist(), bounds[1].tolist(), strict=True):
            leaders = np.unique(root[dst[b0:b1]])  # earlier rows only: their roots are final
            root[i] = _first_match(i, leaders, sketch, starts, lengths, full, threshold, num_perm)
    for i, r in zip(present.tolist(), root.tolist(), strict=True):
        out[i] = int(present[r])
    return out


def band_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band): datasketch's optimum for the threshold (equal false-positive / negative weights), read
    from a `MinHashLSH`'s public `b` and `r` (its private `_optimal_param` is what computes them; the empty index
    costs nothing beyond that computation)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.5, 0.5))
    return lsh.b, lsh.r


def cluster_ids(texts: list[str | None], threshold: float = 0.8, num_perm: int = 128, ngram: int = 3) -> list:
    """For each text, the index of the first text of its near-duplicate cluster (itself when unique); None for
    missing or empty texts. Near duplicate of the cluster's first text = word-n-gram Jaccard >= `threshold`."""
    b, r = band_params(threshold, num_perm)
    return combine([features(texts, num_perm, ngram, b, r)], threshold, num_perm)


class NearDuplicate:
    """The scorer: `features(rows)` per chunk (streamed by `distill score`), `combine(list of features)` at the end;
    calling it on a list of rows does both."""

    def __init__(self, threshold: float, num_perm: int, ngram: int, part: str):
        self.threshold, self.num_perm, self.ngram, self.part = threshold, num_perm, ngram, part
        self.bands, self.rows_per_band = band_params(threshold, num_perm)

    def features(self, rows: list[dict]) -> Features:
        texts = [trace_text(r, self.part) for r in rows]
        return features(texts, self.num_perm, self.ngram, self.bands, self.rows_per_band)

    def combine(self, chunks: list[Features]) -> list:
        return combine(chunks, self.threshold, self.num_perm)

    def __call__(self, rows: list[dict]) -> list:
        return self.combine([self.features(rows)])


@register("near_duplicate")
def make_near_duplicate(threshold: float = 0.8, num_perm: int = 128, ngram: int = 3, part: str = "raw"):
    """Cluster id (an int: the 0-based input position of the cluster's first row) of each row's trace `part`;
    rows in the same cluster are near duplicates of its first row. None for rows without a trace."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError("near_duplicate: threshold must be in (0, 1]")
    if num_perm < 16 or ngram < 1:
        raise ValueError("near_duplicate: need num_perm >= 16 and ngram >= 1")
    return NearDuplicate(threshold, num_perm, ngram, part)
