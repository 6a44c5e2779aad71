"""A fault-injecting OpenAI-compatible chat server for tests and benchmarks (aiohttp, loopback only, no model).

    python -m distill.testing.fake_openai --port 0 --latency_s 0.2     # prints its base_url, serves until killed

    server = FakeOpenAI(fault_rate=0.3, seed=0); base_url = server.start()   # in a background thread
    ... server.seen_keys, server.fault_counts ...; server.stop()

Every request waits `latency_s` (asyncio.sleep: no CPU work) and is answered with a deterministic ECR-shaped trace.
With probability `fault_rate` it instead gets the next fault in FAULTS order (so every kind shows up): 429 with
Retry-After, 500, 503 with Retry-After, a stall past the client timeout, a dropped connection, malformed JSON,
empty choices, or `finish_reason: length` (and, when asked for with `faults=`, SHAPE_FAULTS: content a number or an
object). It records each request's content key (the `X-Distill-Content-Key` header, else the sha256 of the body) so
tests can check what was (re)sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import threading
from collections import Counter

import orjson
from aiohttp import web

FAULTS = ("429", "500", "503", "stall", "drop", "bad_json", "empty_choices", "length")
# Not in FAULTS by default (ask for them with `faults=`): a 200 whose message content is a number / an object.
SHAPE_FAULTS = ("number_content", "object_content")


class FakeOpenAI:
    def __init__(self, latency_s: float = 0.0, fault_rate: float = 0.0, faults: tuple[str, ...] = FAULTS,
                 stall_s: float = 5.0, retry_after: str = "0.05", seed: int = 0, parse: bool = True,
                 record: bool = False, status: int | None = None):  # fmt: skip
        self.latency_s, self.fault_rate, self.faults = latency_s, fault_rate, faults
        self.stall_s, self.retry_after, self.parse = stall_s, retry_after, parse
        self._rng = random.Random(seed)
        self._next_fault = 0
        self.seen_keys: list[str] = []  # every request, in arrival order (faulted ones too)
        self.answered_keys: list[str] = []  # requests answered 200 with a usable completion
        self.fault_counts: Counter = Counter()
        self.auth_headers: set[str] = set()
        self.models: Counter = Counter()
        self.record, self.status = record, status
        self.requests: list[dict] = []  # with record=True: {"path", "headers", "body"} of each request
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def _completion(self, model: str, key: str, finish: str, prompt_tokens: int) -> bytes:
        content = (f"<think>Reasoning about request {key[:8]}: the evidence points one way.</think>"
                   f"Final answer for {key[:8]}." if finish == "stop" else f"<think>Reasoning about {key[:8]} that")  # fmt: skip
        return orjson.dumps({
            "id": f"chatcmpl-{key[:12]}", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 16, "total_tokens": prompt_tokens + 16},
        })  # fmt: skip

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if not self.parse:  # benchmark mode: no CPU work beyond reading the body
            await asyncio.sleep(self.latency_s)
            return web.Response(body=self._completion("fake", "0" * 12, "stop", 8), content_type="application/json")
        key = request.headers.get("X-Distill-Content-Key") or hashlib.sha256(raw).hexdigest()
        self.seen_keys.append(key)
        if self.record:
            self.requests.append({"path": request.path, "headers": dict(request.headers), "body": orjson.loads(raw)})
        if self.status is not None:  # a fixed error status for every request (tests of non-retryable errors)
            return web.json_response({"error": {"message": f"status {self.status}"}}, status=self.status)
        if auth := request.headers.get("Authorization"):
            self.auth_headers.add(auth)
        try:
            body = orjson.loads(raw)
            model = body["model"]
            assert isinstance(body["messages"], list) and body["messages"]
        except Exception:
            return web.json_response({"error": {"message": "request is not a chat completion"}}, status=400)
        self.models[model] += 1
        fault = None
        if self.fault_rate and self._rng.random() < self.fault_rate:
            fault = self.faults[self._next_fault % len(self.faults)]
            self._next_fault += 1
            self.fault_counts[fault] += 1
        await asyncio.sleep(self.latency_s)
        if fault in ("429", "503"):
            return web.json_response({"error": {"message": "slow down"}}, status=int(fault),
                                     headers={"Retry-After": self.retry_after})  # fmt: skip
        if fault == "500":
            return web.json_response({"error": {"message": "internal error"}}, status=500)
        if fault == "stall":
            await asyncio.sleep(self.stall_s)
        if fault == "drop":
            request.transport.abort()  # the client sees the connection reset / server disconnected
            return web.Response()
        if fault == "bad_json":
            return web.Response(body=b'{"choices": [{"message": ', content_type="application/json")
        if fault == "empty_choices":
            return web.Response(body=orjson.dumps({"object": "chat.completion", "model": model, "choices": []}),
                                content_type="application/json")  # fmt: skip
        if fault in SHAPE_FAULTS:
            content = 42 if fault == "number_content" else {"answer": 42}
            return web.Response(body=orjson.dumps({"object": "chat.completion", "model": model, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}),
                content_type="application/json")  # fmt: skip
        finish = "length" if fault == "length" else "stop"
        self.answered_keys.append(key)
        return web.Response(body=self._completion(model, key, finish, len(raw) // 4), content_type="application/json")

    async def _start(self, port: int) -> int:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        return self._runner.addresses[0][1]

    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1 (a free port by default) in a daemon thread; returns the base_url ('.../v1')."""
        self._loop = asyncio.new_event_loop()
        ready: dict = {}
        started = threading.Event()

        def serve():
            asyncio.set_event_loop(self._loop)
            ready["port"] = self._loop.run_until_complete(self._start(port))
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return f"http://127.0.0.1:{ready['port']}/v1"

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency_s", type=float, default=0.2)
    ap.add_argument("--fault_rate", type=float, default=0.0)
    ap.add_argument("--no_parse", action="store_true", help="benchmark mode: read the body, answer a fixed reply")
    args = ap.parse_args()
    server = FakeOpenAI(latency_s=args.latency_s, fault_rate=args.fault_rate, parse=not args.no_parse)

    async def serve():
        port = await server._start(args.port)
        print(f"http://127.0.0.1:{port}/v1", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
