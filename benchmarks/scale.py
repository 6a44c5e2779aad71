"""Scale benchmark: every stage on N synthetic trace rows, rows/s, CPU seconds and peak RSS per stage.

    python benchmarks/scale.py --rows 100000 300000 1000000      # the issue-11 table (a long run: see --stages)
    python benchmarks/scale.py --rows 200 --workdir /tmp/scale     # a smoke run (tests/test_scale_benchmark.py)

For each N: N/2 synthetic examples (half text-to-image retrieval rows without images, half VQA rows with one of a few
small PNGs; gold answers on the VQA ones) and N trace rows (2 samples per example; half the traces follow one
template that differs in ids and a few words, half are diverse random prose; every 10th is a near copy of an earlier
one). Then each stage runs as its own `python -m distill` process, measured by `os.wait4` (wall, user+sys CPU, peak
RSS of that process):
- generate: the examples, 2 samples each, against `distill.testing.fake_openai` (no latency) on a loopback port;
- reason: the same examples through the student's openai backend (same server, 2 samples each);
- score: format, truncated, repetition, answer_match, self_consistency, near_duplicate on the synthetic traces;
- filter: thresholds, near-duplicate dedup (global) and best-of-1 per example on the scored rows;
- merge: the traces split into two shards, joined again;
- export: the kept rows into the SFT dataset (images resized and stored).
Prints one table (and --json writes it) plus, when the smallest and largest N are both run, each stage's time ratio.
The machine's load average is printed before and after: on a shared box the wall time includes waiting for a core,
the CPU seconds do not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.io import write_jsonl_atomic  # noqa: E402
from distill.records import make_example, side  # noqa: E402
from distill.testing.traces import trace_row  # noqa: E402

STAGES = ("generate", "reason", "score", "filter", "merge", "export")
COLOURS = "red blue green yellow black white purple orange".split()
SHAPES = "circle square triangle star hexagon cross".split()
WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "po", "ru", "si", "ta", "vu", "ze") for b in range(500)]


def make_images(root: Path) -> list[str]:
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i, colour in enumerate(COLOURS[:4]):
        Image.new("RGB", (64 + 16 * i, 48), colour).save(root / "images" / f"img{i}.png")
        names.append(f"images/img{i}.png")
    return names


def example(i: int, images: list[str]) -> dict:
    if i % 2:
        c, s = COLOURS[i % 8], SHAPES[i % 6]
        return make_example(f"vqa-{i:08d}", "vqa", "OK-VQA", side(f"What shape is the {c} object {i}?",
                            [images[i % len(images)]]), "Answer the question:", side(s), [], s)  # fmt: skip
    return make_example(f"t2i-{i:08d}", "retrieval", "MSCOCO_t2i", side(f"a photo of item {i} in a {COLOURS[i % 8]} room"),
                        "Find the image:", side(f"caption {i}"), [side(f"caption {i + 1}")])  # fmt: skip


def trace_text(i: int, ex: dict, rng: random.Random) -> str:
    answer = ex["answer"] or ex["positive"]["text"]
    if i % 2:  # templated: what a teacher with a fixed output format writes
        c, s, c2 = rng.choice(COLOURS), rng.choice(SHAPES), rng.choice(COLOURS)
        return (f"<think>The query asks about item {i} of {ex['id']}. I see a {c} {s} in the "
                f"{rng.choice(['top', 'bottom', 'middle'])} part and a {c2} {rng.choice(SHAPES)} next to it. The {s} is "
                f"the main object, so the answer names it. Counting gives {rng.randint(1, 9)} objects in all.</think>\n"
                f"Answer: {answer}")  # fmt: skip
    return "<think>" + " ".join(rng.choice(WORDS) for _ in range(60)) + f"</think>\nAnswer: {answer}"


def make_data(n_rows: int, root: Path) -> dict:
    """examples.jsonl (n_rows/2), traces.jsonl (n_rows), two trace shards; streamed, never all in memory."""
    images = make_images(root)
    n_ex = max(1, n_rows // 2)
    write_jsonl_atomic(root / "examples.jsonl", (example(i, images) for i in range(n_ex)))
    rng = random.Random(0)
    recent: list[str] = []

    def traces(parity=None):
        for i in range(n_ex):
            ex = example(i, images)
            for s in range(2):
                k = 2 * i + s
                text = trace_text(k, ex, rng)
                if k % 10 == 9 and recent:  # a near copy of a recent trace (one word changed)
                    words = rng.choice(recent).split(" ")
                    words[rng.randrange(len(words))] = "changed"
                    text = " ".join(words)
                recent.append(text)
                del recent[:-64]
                if parity is None or k % 2 == parity:
                    yield trace_row(ex, s, text)

    write_jsonl_atomic(root / "traces.jsonl", traces())
    for p in (0, 1):
        rng.seed(0)
        recent.clear()
        write_jsonl_atomic(root / f"shard{p}.jsonl", traces(p))
    return {"examples": n_ex, "rows": 2 * n_ex}


def run_stage(args: list[str], log: Path) -> dict:
    """Run `python -m distill ARGS` and measure that process: wall, CPU, peak RSS (os.wait4's rusage)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "distill", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    return {"rc": os.waitstatus_to_exitcode(status), "wall_s": round(wall, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024)}  # fmt: skip


def start_fake() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "distill.testing.fake_openai", "--port", "0", "--latency_s", "0"],
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    return proc, proc.stdout.readline().decode().strip()


def stage_args(stage: str, root: Path, url: str) -> list[str]:
    scorers = {"format": None, "truncated": None, "repetition": {"n": 4}, "answer_match": None,
               "self_consistency": None, "near_duplicate": {"threshold": 0.8}}  # fmt: skip
    return {
        "generate": ["generate", "--input", str(root / "examples.jsonl"), "--image_root", str(root), "--output",
                     str(root / "gen/traces.jsonl"), "--base_urls", url, "--model", "m", "--num_samples", "2",
                     "--max_concurrency", "256", "--max_tokens", "64", "--progress", "false"],
        "reason": ["reason", "--backend", "openai", "--input", str(root / "examples.jsonl"), "--image_root", str(root),
                   "--output", str(root / "reason/traces.jsonl"), "--base_urls", url, "--model", "m", "--num_samples",
                   "2", "--temperature", "0.7", "--max_concurrency", "256", "--max_new_tokens", "64",
                   "--progress", "false"],
        "score": ["score", "--input", str(root / "traces.jsonl"), "--output", str(root / "score/scored.jsonl"),
                  "--scorers", json.dumps(scorers)],
        "filter": ["filter", "--input", str(root / "score/scored.jsonl"), "--kept", str(root / "filter/kept.jsonl"),
                   "--rejected", str(root / "filter/rejected.jsonl"),
                   "--thresholds", json.dumps({"format": {"min": 1}, "repetition": {"max": 0.3}}),
                   "--dedup", json.dumps({"score": "near_duplicate", "scope": "global"}),
                   "--best_of_n", json.dumps({"score": "self_consistency", "n": 1})],
        "merge": ["merge", "--inputs", str(root / "shard0.jsonl"), str(root / "shard1.jsonl"), "--output",
                  str(root / "merge/traces.jsonl")],
        "export": ["export", "--input", str(root / "filter/kept.jsonl"), "--output", str(root / "export"),
                   "--image_root", str(root), "--require_think", "true"],
    }[stage]  # fmt: skip


def rows_of(stage: str, root: Path, n: int) -> int:
    if stage == "export":  # export reads the kept rows
        kept = root / "filter/kept.jsonl"
        return sum(1 for _ in open(kept, "rb")) if kept.exists() else 0
    return n


def near_duplicate_only(n: int) -> dict:
    """near_duplicate alone on n templated traces, in this process: CPU seconds of features and combine."""
    import resource

    from distill.scoring.dedup import band_params, combine, features

    rng, texts = random.Random(0), []
    for i in range(n):
        ex = {"id": f"vqa-{i // 2:08d}", "answer": SHAPES[i % 6], "positive": {"text": ""}}
        texts.append(trace_text(2 * i + 1, ex, rng))  # odd positions: the templated traces
    b, r = band_params(0.8, 128)
    c0 = time.process_time()
    feats = [features(texts[i : i + 8192], 128, 3, b, r) for i in range(0, n, 8192)]
    c1 = time.process_time()
    ids = combine(feats, 0.8, 128)
    c2 = time.process_time()
    return {"rows": n, "features_cpu_s": round(c1 - c0, 1), "combine_cpu_s": round(c2 - c1, 1),
            "clusters": len(set(ids)), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}  # fmt: skip


def embedding_gain_only(n: int, workdir: Path) -> list[dict]:
    """embedding_gain alone through `python -m distill score` on n synthetic trace rows (as `make_data`: n/2 examples,
    2 samples each), with the model-free `hashing` embedder, so the pools, streaming and score cache are measured
    rather than a model. Run twice: cold (every row embedded), then again into the same output directory (every value
    a cache hit: what a rerun after a crash or after adding a scorer costs)."""
    root = workdir / f"gain{n}"
    images, rng = make_images(root), random.Random(0)
    rows = (trace_row(ex, s, trace_text(2 * i + s, ex, rng)) for i in range(max(1, n // 2))
            for ex in (example(i, images),) for s in range(2))  # fmt: skip
    write_jsonl_atomic(root / "traces.jsonl", rows)
    args = ["score", "--input", str(root / "traces.jsonl"), "--output", str(root / "score/scored.jsonl"),
            "--scorers", json.dumps({"embedding_gain": {"embedder": "hashing"}})]  # fmt: skip
    out = []
    for run in ("cold", "cached"):
        r = run_stage(args, root / f"gain_{run}.log")
        summary = json.loads((root / "score/scored.summary.json").read_text()) if r["rc"] == 0 else {}
        out.append({"rows": n, "run": run, **r, "cache": summary.get("score_cache", {}).get("embedding_gain")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--workdir", default="/tmp/distill-scale")
    ap.add_argument("--json", default=None, help="Also write the results here.")
    ap.add_argument("--near_duplicate_only", action="store_true", help="Time near_duplicate alone on templated "
                    "traces (in process; the texts themselves are in memory too) for each --rows.")  # fmt: skip
    ap.add_argument("--embedding_gain_only", action="store_true", help="Time `distill score` with embedding_gain "
                    "alone (hashing embedder: the pools and cache, not a model), cold then cached, for each --rows.")  # fmt: skip
    args = ap.parse_args()
    if args.embedding_gain_only:
        for n in args.rows:
            for r in embedding_gain_only(n, Path(args.workdir)):
                print(r, flush=True)
        return
    if args.near_duplicate_only:
        for n in args.rows:
            print(near_duplicate_only(n), flush=True)
        return
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}", flush=True)
    fake, url = start_fake() if {"generate", "reason"} & set(args.stages) else (None, "")
    results = []
    try:
        for n in args.rows:
            root = Path(args.workdir) / f"rows{n}"
            t0 = time.monotonic()
            info = make_data(n, root)
            print(f"[{n}] data: {info} in {time.monotonic() - t0:.0f}s", flush=True)
            for stage in args.stages:
                r = run_stage(stage_args(stage, root, url), root / f"{stage}.log")
                rows = rows_of(stage, root, info["rows"])
                r |= {"rows": n, "stage": stage, "stage_rows": rows, "rows_per_s": round(rows / max(r["wall_s"], 1e-9))}
                results.append(r)
                print(f"[{n}] {stage}: {r}", flush=True)
                if r["rc"] != 0:
                    print((root / f"{stage}.log").read_text()[-3000:], file=sys.stderr)
    finally:
        if fake is not None:
            fake.terminate()
            fake.wait()
    print(f"load average after: {os.getloadavg()}")
    print("\n| stage | rows | wall s | CPU s | rows/s | peak RSS MB | rc |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['stage']} | {r['rows']} | {r['wall_s']} | {r['cpu_s']} | {r['rows_per_s']} | {r['peak_rss_mb']} "
              f"| {r['rc']} |")  # fmt: skip
    lo, hi = min(args.rows), max(args.rows)
    if lo != hi:
        for stage in args.stages:
            a = next((r for r in results if r["stage"] == stage and r["rows"] == lo), None)
            b = next((r for r in results if r["stage"] == stage and r["rows"] == hi), None)
            if a and b:
                print(f"{stage}: time ratio {hi}/{lo} rows = {b['wall_s'] / max(a['wall_s'], 1e-9):.1f} wall, "
                      f"{b['cpu_s'] / max(a['cpu_s'], 1e-9):.1f} CPU")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    sys.exit(1 if any(r["rc"] != 0 for r in results) else 0)


if __name__ == "__main__":
    main()
