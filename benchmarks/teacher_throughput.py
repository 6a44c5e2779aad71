"""Teacher client throughput: our aiohttp + orjson client vs a plain `AsyncOpenAI` + semaphore loop, side by side.

    python benchmarks/teacher_throughput.py [--requests 3000] [--concurrency 128] [--latency_s 0.2]

A local server (distill.testing.fake_openai, in its own process so it does not take the client's CPU) answers every
request after a fixed latency with no CPU work, so the best possible rate is concurrency / latency (640 req/s at
128 and 0.2 s). Reported: achieved req/s, its ratio to that limit, and client CPU ms per request, for text-only
requests and for one distinct small image (base64 PNG data URL) per request; "ours + journal" is the path `generate`
takes (client + journal + progress); "bare aiohttp loop" is the leanest loop possible, the ceiling on this machine
at this moment (other processes share the CPUs), so ours / bare shows our own overhead. CPU ms/req counts this
process only (the journaled case runs in a thread of it).
Not a test: it prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import openai  # noqa: E402
import orjson  # noqa: E402
from PIL import Image  # noqa: E402

from distill.client.driver import drive, journal_key  # noqa: E402
from distill.client.http import ClientConfig, TeacherClient  # noqa: E402
from distill.client.journal import Journal  # noqa: E402
from distill.images import data_url, encode_image  # noqa: E402


def start_server(latency_s: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "distill.testing.fake_openai", "--port", "0", "--latency_s",
                             str(latency_s), "--no_parse"], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    return proc, proc.stdout.readline().strip()


def messages_for(n: int, images: bool) -> list[list[dict]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        text = {"type": "text", "text": f"Question {i}: describe what the target must contain."}
        if not images:
            out.append([{"role": "user", "content": text["text"]}])
            continue
        # a distinct 56x56 noise image (~9 KB PNG) per request
        url = data_url(encode_image(Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))))
        out.append([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, text]}])
    return out


async def ours(url: str, msgs: list, concurrency: int) -> None:
    cfg = ClientConfig(base_urls=[url], model="fake", max_concurrency=concurrency, timeout_s=60, progress=False)
    async with TeacherClient(cfg) as client:
        bad = []
        items = [(str(i), {"model": "fake", "messages": m, "max_tokens": 16}) for i, m in enumerate(msgs)]
        await client.run(items, lambda k, r: r["status"] == "ok" or bad.append(r))
        assert not bad, bad[:1]


async def ours_journaled(url: str, msgs: list, concurrency: int) -> None:
    """The stage's real path: `drive` = our client + the content-keyed journal (one flushed line per answer) + tqdm."""
    cfg = ClientConfig(base_urls=[url], model="fake", max_concurrency=concurrency, timeout_s=60, progress=False)
    items = [(journal_key("fake", m, {"max_tokens": 16}), {"model": "fake", "messages": m, "max_tokens": 16})
             for m in msgs]  # fmt: skip
    with tempfile.TemporaryDirectory() as d, Journal(Path(d) / "journal.jsonl") as journal:
        # drive() runs its own event loop: hop to a thread so it can run inside this benchmark's loop.
        failures, _ = await asyncio.to_thread(drive, cfg, journal, items, "bench")
        assert not failures


async def bare_aiohttp(url: str, msgs: list, concurrency: int) -> None:
    """Reference ceiling: the leanest possible loop (no retries, no journal) on this machine, right now."""
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(m):
            payload = orjson.dumps({"model": "fake", "messages": m, "max_tokens": 16})
            headers = {"Content-Type": "application/json"}
            async with sem, session.post(url + "/chat/completions", data=payload, headers=headers) as r:
                assert orjson.loads(await r.read())["choices"]

        await asyncio.gather(*(one(m) for m in msgs))


async def plain_openai(url: str, msgs: list, concurrency: int) -> None:
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
    sem = asyncio.Semaphore(concurrency)

    async def one(m):
        async with sem:
            await client.chat.completions.create(model="fake", messages=m, max_tokens=16)

    await asyncio.gather(*(one(m) for m in msgs))
    await client.close()


def measure(fn, url: str, msgs: list, concurrency: int) -> tuple[float, float]:
    asyncio.run(fn(url, msgs[:concurrency], concurrency))  # warm-up: imports, first connections
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(fn(url, msgs, concurrency))
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--latency_s", type=float, default=0.2)
    args = ap.parse_args()
    limit = args.concurrency / args.latency_s
    proc, url = start_server(args.latency_s)
    try:
        print(f"server {url}: latency {args.latency_s} s, concurrency {args.concurrency}, limit {limit:.0f} req/s, "
              f"{args.requests} requests per case, {os.cpu_count()} CPUs (shared machines: timings are noisy)")  # fmt: skip
        print(f"{'case':12s} {'client':28s} {'seconds':>8s} {'req/s':>8s} {'/limit':>7s} {'cpu ms/req':>11s}")
        for case, images in (("text", False), ("1 image/req", True)):
            msgs = messages_for(args.requests, images)
            clients = (("bare aiohttp loop (ceiling)", bare_aiohttp), ("ours (aiohttp+orjson)", ours),
                       ("ours + journal (generate)", ours_journaled),
                       ("AsyncOpenAI + semaphore", plain_openai))  # fmt: skip
            for name, fn in clients:
                wall, cpu = measure(fn, url, msgs, args.concurrency)
                rate = args.requests / wall
                print(f"{case:12s} {name:28s} {wall:8.2f} {rate:8.1f} {rate / limit:7.2f} "
                      f"{1000 * cpu / args.requests:11.2f}", flush=True)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
