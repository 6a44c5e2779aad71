"""`distill serve`: an OpenAI-compatible chat-completions server over local HF models, with dynamic batching.

    distill serve --model smollm2 --model /tmp/tiny-qwen2vl --port 0
    curl -s http://127.0.0.1:PORT/v1/models

Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (OpenAI wire format; images as base64 data URLs),
`GET /v1/stats` (batches run, requests and rows served, tokens), `GET /metrics` (Prometheus text), `GET /health`.
Each `--model` is `PATH` (model id = the directory name), `NAME=PATH`, the reserved `smollm2` (the embedded
SmolLM2-135M-Instruct, materialised on first use; see `distill.serve.local_models`), or the reserved `shape-scenes`
(the demo's image teacher: reads shape scenes from the pixels, no weights; see `distill.serve.scene_teacher`).
Requests are routed by their `model` field. Once listening, the server prints `distill serve listening on http://HOST:PORT/v1` on stdout, so a
parent that started it with `--port 0` reads the port from that line. SIGTERM / SIGINT: new requests get a 503
`server_stopping` JSON error, work in hand may finish for `--drain_s` seconds, whatever is left then gets the same 503
(clients retry it), and the process exits 0.
With `--api_key_env NAME` every /v1 request must carry `Authorization: Bearer $NAME`; the key is never logged.

Hardening (each limit is a flag): a body over `--max_body_mb` is a 413 before it is read (Content-Length) or as soon
as it grows past the limit (chunked); text that cannot fit the context is a 400 before tokenizing; images pass the
`distill.images` size and pixel guards before decoding (`--max_image_pixels`, `--max_images`); `n x max_tokens` is at
most `--max_request_tokens`; at most 4 requests are parsed/tokenized at once. A client that disconnects has its
generation stopped at the next token (`distill.serve.batcher`).
This is the embedded and test teacher; production teachers run on vLLM or SGLang (docs/serve.md). The flags:
`distill.serve.serve_config.ServeConfig`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

# At module level: FastAPI resolves the string annotations (`from __future__ import annotations`) of route functions
# in this module's globals; a `Request` imported inside a function would turn into a required query parameter.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from distill.serve.serve_config import ServeConfig
from distill.stage import Stage, StageError

log = logging.getLogger(__name__)

LISTENING = "distill serve listening on"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # what a client's x-request-id may be to be echoed back


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or RequestError(413) as soon as it is known to exceed `limit` (declared or streamed)."""
    from distill.serve.chat_request import RequestError

    def too_large(size: str) -> RequestError:
        return RequestError(413, f"request body of {size} is over this server's limit of {limit} bytes "
                            "(--max_body_mb)", code="request_too_large")  # fmt: skip

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(f"{int(declared)} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _until_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def build_app(models: dict, batcher, config: ServeConfig, api_key: str | None = None):
    """The FastAPI app over loaded `models` ({id: LocalModel}) and a started `batcher`."""
    from distill.serve.batcher import ServerStopping
    from distill.serve.chat_request import RequestError, completion_body, error_body, parse_chat_request
    from distill.serve.metrics import ServeMetrics

    app = FastAPI(title="distill serve", docs_url=None, redoc_url=None, openapi_url=None)
    started = int(time.time())
    expected = f"Bearer {api_key}".encode() if api_key else None
    metrics = ServeMetrics(batcher)
    limits, body_limit = config.limits(), int(config.max_body_mb * 2**20)
    prepare_slots = asyncio.Semaphore(4)  # decoded images and token lists of at most 4 requests in memory at once

    def error(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, status=status, code=code), status_code=status, headers=headers)

    def stopping(message: str = "server is shutting down; retry on another replica or later") -> JSONResponse:
        return error(503, message, "server_stopping", headers={"Retry-After": "5"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # unknown routes, wrong methods: OpenAI's shape too
        return error(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if expected is not None and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):  # constant time; the header is never logged
                metrics.requests.labels("", "unauthorized").inc()  # key guessing shows on the dashboards
                return error(401, "Incorrect or missing API key (send 'Authorization: Bearer <key>').",
                             "invalid_api_key")  # fmt: skip
        return await call_next(request)

    @app.middleware("http")  # added last, so outermost: every answer (401s included) carries the id
    async def request_id(request: Request, call_next):
        """`x-request-id` on every response, as OpenAI and vLLM send it: the client's own (when it is a plain token
        of at most 128 characters) or a new one, so a client's log line and the server's access log meet."""
        given = request.headers.get("x-request-id", "")
        rid = given if REQUEST_ID.fullmatch(given) else f"req-{uuid.uuid4().hex}"
        request.state.request_id = rid
        response = await call_next(request)
        response.headers["x-request-id"] = rid
        return response

    def model_card(model_id: str, model) -> dict:
        return {"id": model_id, "object": "model", "created": started, "owned_by": "distill", "kind": model.kind}

    @app.get("/health")
    async def health():
        return {"status": "stopping" if batcher.stopping else "ok"}

    @app.get("/metrics")
    async def prometheus_metrics():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card(i, m) for i, m in models.items()]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        if model_id not in models:
            return error(404, f"The model `{model_id}` does not exist.", "model_not_found")
        return model_card(model_id, models[model_id])

    @app.get("/v1/stats")
    async def stats():
        return batcher.stats()

    def prepare(raw: bytes):
        chat = parse_chat_request(raw, config.default_max_tokens, limits=limits)
        model = models.get(chat.model)
        if model is None:
            raise RequestError(404, f"The model `{chat.model}` does not exist. Served: {sorted(models)}.",
                               code="model_not_found", param="model")  # fmt: skip
        return chat, model, model.prepare(chat)

    outcomes = {400: "invalid_request", 404: "not_found", 413: "too_large"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        start, model_id, job = time.monotonic(), "", None
        try:
            if batcher.stopping:
                raise ServerStopping("server is shutting down")
            raw = await _read_body(request, body_limit)
            async with prepare_slots:  # parsing, image decoding and tokenization: CPU work, off the event loop
                chat, model, prepared = await run_in_threadpool(prepare, raw)
            model_id = model.model_id
            job = batcher.submit(model, prepared, chat.params)
            answer = asyncio.wrap_future(job.future)
            gone = asyncio.ensure_future(_until_disconnect(request))
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not answer.done():  # the client went away: stop generating for it
                batcher.cancel(job)
                answer.cancel()
                metrics.requests.labels(model_id, "cancelled").inc()
                return error(499, "client closed the request", "client_closed_request")
            gone.cancel()
            choices = answer.result()
        except RequestError as e:
            metrics.requests.labels(model_id, outcomes.get(e.status, "invalid_request")).inc()
            return JSONResponse(e.body(), status_code=e.status)
        except ServerStopping as e:
            metrics.requests.labels(model_id, "server_stopping").inc()
            return stopping(str(e))
        except Exception as e:
            log.exception("request %s failed", getattr(request.state, "request_id", "?"))
            metrics.requests.labels(model_id, "failed").inc()
            return error(500, f"generation failed: {type(e).__name__}: {e}", "generation_failed")
        metrics.requests.labels(model_id, "ok").inc()
        metrics.latency.labels(model_id).observe(time.monotonic() - start)
        return completion_body(chat, model.model_id, prepared.prompt_tokens, choices)

    return app


def load_models(specs: list[str], device: str, dtype: str, max_prompt_chars: int | None = None) -> dict:
    """{model id: LocalModel} for the `--model` specs; ValueError on duplicate ids, missing directories and damaged
    checkpoints (`distill.checkpoint.check_checkpoint`)."""
    from distill.serve.local_engine import LocalModel, parse_model_spec
    from distill.serve.local_models import resolve_local_model
    from distill.serve.scene_teacher import SCENES_NAME, SceneTeacher

    models: dict = {}
    for spec in specs:
        model_id, path = parse_model_spec(spec)
        if model_id in models:
            raise ValueError(f"two models share the id {model_id!r}; name them with NAME=PATH")
        if path == SCENES_NAME and not Path(path).exists():  # the demo's pixel-reading image teacher: no weights
            models[model_id] = SceneTeacher(model_id)
            continue
        resolved = resolve_local_model(path)
        if not resolved.is_dir():
            raise ValueError(f"--model {spec}: {resolved} is not a model directory")
        from distill.checkpoint import check_checkpoint

        check_checkpoint(resolved, f"--model {spec}:")  # a damaged or cut copy: one line, before loading anything
        models[model_id] = LocalModel(model_id, resolved, device=device, dtype=dtype, max_prompt_chars=max_prompt_chars)
    return models


def run(config: ServeConfig) -> None:
    """Serve until SIGTERM / SIGINT; writes no file (logs go to stderr, the listening line to stdout)."""
    import uvicorn

    from distill.serve.batcher import Batcher

    api_key = None
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            raise StageError(f"environment variable {config.api_key_env} (--api_key_env) is not set or empty")
    try:
        models = load_models(config.model, config.device, config.dtype, config.max_prompt_chars or None)
    except (ValueError, OSError) as e:
        raise StageError(str(e)) from None
    if not api_key and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without --api_key_env: anyone who can reach this port can use the models",
                    config.host)  # fmt: skip
    batcher = Batcher(config.max_batch_size, config.batch_wait_ms / 1000, config.slice_tokens)
    batcher.start()
    app = build_app(models, batcher, config, api_key)

    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as e:
        batcher.stop()
        raise StageError(f"cannot listen on {config.host}:{config.port}: {e}") from None
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if family == socket.AF_INET6 else host

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:  # listening now: safe for a parent process to connect
                print(f"{LISTENING} http://{url_host}:{port}/v1 (models: {', '.join(models)})", flush=True)

        draining = False

        def handle_exit(self, sig, frame):  # SIGTERM/SIGINT: 503 new work, drain, then 503 what is left
            batcher.shutdown(config.drain_s)
            if self.draining:  # a second signal: stop now
                return super().handle_exit(sig, frame)
            self.draining = True
            # uvicorn closes the listening socket as soon as it is told to exit: keep listening (new requests get
            # 503 server_stopping + Retry-After, so clients and load balancers go elsewhere) until the drain ends
            threading.Thread(target=self._exit_after_drain, args=(sig, frame), daemon=True).start()

        def _exit_after_drain(self, sig, frame):
            batcher.wait_drained(config.drain_s + 5)
            super().handle_exit(sig, frame)  # only sets flags the serving loop polls: safe from this thread

    # log_config=None: uvicorn's records (access log included) go through our root logger to stderr, so stdout
    # carries only the listening line and a parent that stops reading stdout can never block the server.
    # The batcher answers every request within drain_s of the signal, so uvicorn's own cut-off (plain-text 500s)
    # is never reached while a request is still in hand.
    server = Server(uvicorn.Config(app, log_config=None, access_log=True,
                                   timeout_graceful_shutdown=int(config.drain_s) + 30))  # fmt: skip

    def on_signal(signum, frame):  # uvicorn re-raises the signal after its graceful shutdown; land here, exit 0
        log.info("%s received: shut down", signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        server.run(sockets=[sock])
    finally:
        batcher.stop()
        sock.close()
    log.info("distill serve stopped: %s", batcher.stats())


STAGE = Stage("serve", (ServeConfig,), run)
main = STAGE.main


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["serve", *sys.argv[1:]]))
