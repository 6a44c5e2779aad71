"""Embedded page images (MMEB-V2's visual-document corpora as published): what reading them costs.

    python benchmarks/visdoc_pages.py [--pages 300] [--cache_mb 16] [--root DIR (reuse the corpus written there)]

Writes a BEIR corpus whose pages are embedded in parquet (rows of noisy 600x800 PNG pages, row groups of 100 as
`datasets` writes image parquet), then measures side by side:
  1. load_examples (page rows): only the id column is read;
  2. `datasets.Dataset.from_parquet` + iterating the rows, the generic reader: every page decoded to PIL;
  3. walking every page through distill.images.load_image in corpus order, with the row-group cache at --cache_mb.
Each runs in a fresh process; the figures are seconds and the growth of its peak RSS (sampled) over its RSS after setup, also as
a fraction of the corpus's bytes (the walk is bounded by a row group plus the cache, not by the corpus).
Prints a table; asserts nothing (timings are this machine's).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _page(i: int) -> bytes:
    rng = np.random.default_rng(i)
    arr = rng.integers(0, 255, (800, 600, 3), dtype=np.uint8)  # noise: PNG cannot shrink it, like a dense scan
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


MODES = {
    "ids": "load_examples page rows (ids only)",
    "datasets": "datasets.from_parquet + iterate (decodes every page)",
    "walk": "load_image every page, in order (row-group cache)",
}


def _run(mode: str, root: Path, cache_mb: float) -> tuple[float, float]:
    """(seconds, peak RSS growth in bytes) of one mode, in this (fresh) process."""
    import datasets
    from datasets import Dataset

    import distill.parquet_images as pi
    from distill.data.mmeb import load_examples
    from distill.images import load_image

    datasets.disable_progress_bars()
    corpus = root / "arxivqa_test_subsampled_beir"
    shard = corpus / "corpus" / "test-00000-of-00001.parquet"
    pi.CACHE_BYTES = int(cache_mb * 2**20)
    refs = [x["query"]["images"][0] for _, x in load_examples(corpus, trace_side="target", image_root=root)]
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base, peak, done = rss(), [0], threading.Event()

    def sample():  # the current RSS every 5 ms: ru_maxrss would report the import-time peak instead
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    if mode == "ids":
        sum(1 for _ in load_examples(corpus, trace_side="target", image_root=root))
    elif mode == "datasets":
        sum(1 for _ in Dataset.from_parquet(str(shard), cache_dir=str(root / "hf_cache")))
    else:
        [load_image(root, r).size for r in refs]
    secs = time.perf_counter() - t0
    done.set()
    sampler.join()
    return secs, max(peak[0], rss()) - base


def _write(root: Path, n: int) -> int:
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage

    corpus = root / "arxivqa_test_subsampled_beir"
    shard = corpus / "corpus" / "test-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    pages = [{"corpus-id": i, "image": {"bytes": _page(i), "path": f"{i}.png"}} for i in range(n)]
    Dataset.from_list(pages, features=Features({"corpus-id": Value("int64"), "image": HFImage()})).to_parquet(
        str(shard), batch_size=100
    )
    for name, rows in (("queries", [{"query-id": 0, "query": "q"}]),
                       ("qrels", [{"query-id": 0, "corpus-id": 0, "score": 1}])):  # fmt: skip
        (corpus / name).mkdir()
        Dataset.from_list(rows).to_parquet(str(corpus / name / "test-00000-of-00001.parquet"))
    return shard.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=300)
    ap.add_argument("--cache_mb", type=float, default=16)
    ap.add_argument("--mode", choices=sorted(MODES))  # internal: one measurement in a fresh process
    ap.add_argument("--root")
    args = ap.parse_args()
    if args.mode:
        secs, grown = _run(args.mode, Path(args.root), args.cache_mb)
        print(f"{secs} {grown}")
        return
    import datasets
    import pyarrow.parquet as pq

    datasets.disable_progress_bars()
    shard = "arxivqa_test_subsampled_beir/corpus/test-00000-of-00001.parquet"
    root = Path(args.root or tempfile.mkdtemp(prefix="visdoc_bench_"))  # --root DIR: reuse a corpus written before
    size = (root / shard).stat().st_size if (root / shard).exists() else _write(root, args.pages)
    args.pages = pq.ParquetFile(root / shard).metadata.num_rows
    print(f"corpus: {args.pages} pages, {size / 2**20:.1f} MiB parquet, row groups of 100; cache {args.cache_mb} MiB")
    print(f"{'what':52s} {'seconds':>8s} {'peak RSS growth MiB':>20s} {'/ corpus':>9s}")
    for mode, what in MODES.items():
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--root", str(root), "--cache_mb",
                              str(args.cache_mb)], capture_output=True, text=True, check=True)  # fmt: skip
        secs, grown = map(float, out.stdout.split()[-2:])
        print(f"{what:52s} {secs:8.2f} {grown / 2**20:20.1f} {grown / size:9.2f}")


if __name__ == "__main__":
    main()
