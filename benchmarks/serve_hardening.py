"""What the `distill serve` hardening buys, measured side by side in one run (issue 12). Prints tables; asserts nothing.

    python benchmarks/serve_hardening.py                  # tiny random models, CPU or GPU, ~1-2 minutes

1. Head-of-line blocking: latency of short requests (max_tokens 4), sent one after another for as long as one long
   request (n=4, max_tokens `--long_tokens`, ignore_eos) generates, with batch slicing off (`--slice_tokens 1000000000`: a batch runs to its
   end, as before) and on (the default 16). Compare the ratio column.
2. Memory: the server's peak RSS (VmHWM, Linux) before and after four 12000x12000 PNG data URLs at once, a request
   declaring a 100 MB body, and a 5 MB prompt. All are refused (400/413) without decoding or tokenizing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from test_serve import (  # noqa: E402  (the tests' helpers: tiny text model, server launcher, raw requests)
    build_tiny_text_lm,
    image_message,
    png_bomb_data_url,
    raw_request,
    read_response,
    server_memory_kb,
    start_server,
    text_body,
)


def short_latencies(server, count: int) -> list[float]:
    client = server.client()
    out = []
    for i in range(count):
        t = time.perf_counter()
        client.chat.completions.create(model="txt", messages=[{"role": "user", "content": f"hi {i}"}], max_tokens=4,
                                       temperature=0)  # fmt: skip
        out.append(time.perf_counter() - t)
    return out


def head_of_line(server, long_tokens: int, shorts: int) -> dict:
    short_latencies(server, 2)  # warm-up
    alone = sorted(short_latencies(server, shorts))
    body = text_body("tell me everything", n=4, max_tokens=long_tokens, temperature=1.0, ignore_eos=True)
    done = {}

    def long_request():
        t = time.perf_counter()
        code, _ = server.post_raw(body)
        done["s"], done["code"] = time.perf_counter() - t, code

    thread = threading.Thread(target=long_request)
    thread.start()
    while server.stats()["running_rows"] == 0 and thread.is_alive():
        time.sleep(0.01)
    busy = []
    while thread.is_alive():  # short requests one after another for as long as the long one runs
        busy += short_latencies(server, 1)
    thread.join()
    busy.sort()
    return {"alone_p50": alone[len(alone) // 2], "busy_n": len(busy), "busy_p50": busy[len(busy) // 2],
            "busy_max": busy[-1], "long_s": done["s"]}  # fmt: skip


def memory(server, vlm_name: str) -> dict:
    before = server_memory_kb(server)
    bomb = __import__("orjson").dumps({"model": vlm_name, "messages": image_message("?", png_bomb_data_url())})
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: server.post_raw(bomb)[0], range(4)))
    sock = raw_request(server, b"{", declared=100 * 2**20)
    codes.append(read_response(sock)[0])
    sock.close()
    codes.append(server.post_raw(text_body("word " * 1_000_000))[0])
    after = server_memory_kb(server)
    return {"codes": codes, "before": before, "after": after}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long_tokens", type=int, default=2000)
    ap.add_argument("--shorts", type=int, default=8)
    args = ap.parse_args()
    import torch

    from distill.testing.tiny import build_tiny_vlm

    tmp = Path(tempfile.mkdtemp(prefix="serve-hardening-"))
    text_lm, vlm = build_tiny_text_lm(tmp / "txt"), build_tiny_vlm(tmp / "vlm")
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "DISTILL_TEST_SERVE_KEY": "sk-test-do-not-log-7f3a9c", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": pythonpath}  # fmt: skip
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"distill serve hardening; device {device}; noisy on a shared machine\n")
    print(f"1. short requests (max_tokens 4) one after another while one n=4 x {args.long_tokens}-token request "
          f"runs (alone: median of {args.shorts} on an idle server)\n")  # fmt: skip
    print(f"{'slicing':>8s} {'alone p50 s':>12s} {'answered':>9s} {'busy p50 s':>11s} {'busy max s':>11s} "
          f"{'long req s':>11s} {'max/alone':>10s}")  # fmt: skip
    for label, slice_tokens in (("off", 10**9), ("on (16)", 16)):
        server = start_server(["--model", f"txt={text_lm}", "--model", f"vlm={vlm}", "--api_key_env",
                               "DISTILL_TEST_SERVE_KEY", "--slice_tokens", str(slice_tokens)],
                              tmp / f"serve-{slice_tokens}.log", env, timeout=300)  # fmt: skip
        try:
            r = head_of_line(server, args.long_tokens, args.shorts)
            if slice_tokens == 16:
                m = memory(server, "vlm")
        finally:
            server.proc.terminate()
            server.proc.wait(60)
        print(f"{label:>8s} {r['alone_p50']:12.3f} {r['busy_n']:9d} {r['busy_p50']:11.3f} {r['busy_max']:11.3f} "
              f"{r['long_s']:11.2f} {r['busy_max'] / r['alone_p50']:10.1f}")  # fmt: skip
    mb = {k: {f: v / 1024 for f, v in m[k].items()} for k in ("before", "after")}
    print(f"\n2. refused {m['codes']} (4 x 12000x12000 PNG, 100 MB body, 5 MB prompt): server RSS "
          f"{mb['before']['VmRSS']:.0f} -> {mb['after']['VmRSS']:.0f} MB, peak (VmHWM) {mb['before']['VmHWM']:.0f} -> "
          f"{mb['after']['VmHWM']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
