"""What dynamic batching buys in `distill serve`: requests/s and completion tokens/s at a fixed number of requests in
flight, with batching off (`--max_batch_size 1`) and on, side by side in one run. Prints a table; asserts nothing.

    python benchmarks/serve_batching.py                       # tiny random VLM (image requests), CPU or GPU
    python benchmarks/serve_batching.py --smollm2             # also SmolLM2-135M-Instruct (text requests)

Each configuration starts its own `distill serve --port 0` subprocess and is driven by the real `openai` client from
`--concurrency` threads. Timings on a shared 2-core machine are noisy: compare the ratio column, not absolute rates.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.serve.server import LISTENING  # noqa: E402


def png_data_url(i: int) -> str:
    from PIL import Image

    from distill.images import data_url, encode_image

    return data_url(encode_image(Image.new("RGB", (56 + 28 * (i % 3), 56), (40 * i % 256, 120, 200))))


def start(model_args: list[str], max_batch_size: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath}
    cmd = [sys.executable, "-m", "distill", "serve", "--port", "0", "--max_batch_size", str(max_batch_size),
           "--batch_wait_ms", "5", *model_args]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=open(log_path, "wb"), text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(LISTENING):
            return proc, line.split()[4]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"server failed to start; see {log_path}")


def drive(base_url: str, model: str, requests: int, concurrency: int, max_tokens: int, image: bool) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)

    def one(i: int) -> int:
        text = {"type": "text", "text": f"Describe item {i} in detail."}
        content = [{"type": "image_url", "image_url": {"url": png_data_url(i)}}, text] if image else [text]
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                           max_tokens=max_tokens, temperature=0)  # fmt: skip
        return r.usage.completion_tokens

    one(0)  # warm-up (first call compiles / allocates)
    start_t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - start_t
    return {"req_s": requests / elapsed, "tok_s": tokens / elapsed, "tokens": tokens, "s": elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max_tokens", type=int, default=32)
    ap.add_argument("--batch_size", type=int, default=16, help="max_batch_size of the batched configuration")
    ap.add_argument("--smollm2", action="store_true", help="also benchmark the embedded SmolLM2 (text requests)")
    args = ap.parse_args()

    from distill.testing.tiny import build_tiny_vlm

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    cases = [("tiny-vlm", ["--model", str(build_tiny_vlm(tmp / "tiny-vlm"))], True)]
    if args.smollm2:
        cases.append(("smollm2", ["--model", "smollm2"], False))
    import torch

    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"distill serve batching: {args.requests} requests, {args.concurrency} in flight, max_tokens "
          f"{args.max_tokens}, greedy; device {device}; noisy on a shared machine\n")  # fmt: skip
    print(
        f"{'model':10s} {'max_batch':>9s} {'req/s':>8s} {'tok/s':>8s} {'batches':>8s} {'rows/batch':>10s} {'ratio':>6s}"
    )
    for name, model_args, image in cases:
        base = None
        for batch in (1, args.batch_size):
            proc, url = start(model_args, batch, tmp / f"{name}-{batch}.log")
            try:
                r = drive(url, name, args.requests, args.concurrency, args.max_tokens, image)
                import json
                import urllib.request

                stats = json.loads(urllib.request.urlopen(url + "/stats", timeout=10).read())
            finally:
                proc.terminate()
                proc.wait(30)
            base = base or r["req_s"]
            print(f"{name:10s} {batch:9d} {r['req_s']:8.2f} {r['tok_s']:8.1f} {stats['batches']:8d} "
                  f"{stats['rows'] / max(stats['batches'], 1):10.1f} {r['req_s'] / base:6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
