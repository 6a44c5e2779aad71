"""`distill serve`: an OpenAI-compatible chat-completions server over local HF models, with dynamic batching.

    distill serve --model smollm2 --model /tmp/tiny-qwen2vl --port 0
    curl -s http://127.0.0.1:PORT/v1/models

Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (OpenAI wire format; images as base64 data URLs),
`GET /v1/stats` (batches run, requests and rows served, tokens), `GET /health`.
Each `--model` is `PATH` (model id = the directory name), `NAME=PATH`, or the reserved `smollm2` (the embedded
SmolLM2-135M-Instruct, materialised on first use; see `distill.serve.local_models`). Requests are routed by their
`model` field. Once listening, the server prints `distill serve listening on http://HOST:PORT/v1` on stdout, so a
parent that started it with `--port 0` reads the port from that line. SIGTERM / SIGINT shut it down cleanly (exit 0).
With `--api_key_env NAME` every /v1 request must carry `Authorization: Bearer $NAME`; the key is never logged.
This is the embedded and test teacher; production teachers run on vLLM or SGLang (see README).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

# At module level: FastAPI resolves the string annotations (`from __future__ import annotations`) of route functions
# in this module's globals; a `Request` imported inside a function would turn into a required query parameter.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

LISTENING = "distill serve listening on"


@dataclass
class ServeConfig:
    model: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Model to serve, repeatable: PATH (id = directory name), NAME=PATH, or 'smollm2' (the "
            "embedded SmolLM2-135M-Instruct).",
            "action": "extend",
        },
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to bind (loopback by default)."})
    port: int = field(default=8000, metadata={"help": "TCP port; 0 = any free port (printed once listening)."})
    max_batch_size: int = field(default=16, metadata={"help": "Most rows (requests x n) in one generate call."})
    batch_wait_ms: float = field(
        default=10.0, metadata={"help": "How long the oldest waiting request may wait for others to batch with (ms)."}
    )
    device: str = field(
        default="auto", metadata={"help": "torch device: auto (cuda if available, else cpu), cpu, cuda:0."}
    )
    dtype: str = field(
        default="auto", metadata={"help": "auto (bfloat16 on cuda, float32 on cpu), float32, bfloat16 or float16."}
    )
    default_max_tokens: int = field(
        default=512,
        metadata={"help": "Completion token limit when a request sets neither max_tokens nor max_completion_tokens."},
    )
    max_n: int = field(default=16, metadata={"help": "Largest `n` (choices per request) accepted."})
    api_key_env: str | None = field(
        default=None,
        metadata={
            "help": "Name of an env var holding the API key; if set, requests need 'Authorization: Bearer <key>'."
        },
    )

    def __post_init__(self):
        if not self.model:
            raise ValueError("--model is required (PATH, NAME=PATH or smollm2; repeat it to serve several models)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.max_batch_size < 1:
            raise ValueError(f"--max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"--batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.default_max_tokens < 1 or self.max_n < 1:
            raise ValueError("--default_max_tokens and --max_n must be >= 1")


def build_app(models: dict, batcher, config: ServeConfig, api_key: str | None = None):
    """The FastAPI app over loaded `models` ({id: LocalModel}) and a started `batcher`."""
    from distill.serve.batcher import ServerStopping
    from distill.serve.chat_request import RequestError, completion_body, error_body, parse_chat_request

    app = FastAPI(title="distill serve", docs_url=None, redoc_url=None, openapi_url=None)
    started = int(time.time())
    expected = f"Bearer {api_key}".encode() if api_key else None

    def error(status: int, message: str, code: str | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, status=status, code=code), status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # unknown routes, wrong methods: OpenAI's shape too
        return error(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if expected is not None and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):  # constant time; the header is never logged
                return error(401, "Incorrect or missing API key (send 'Authorization: Bearer <key>').",
                             "invalid_api_key")  # fmt: skip
        return await call_next(request)

    def model_card(model_id: str, model) -> dict:
        return {"id": model_id, "object": "model", "created": started, "owned_by": "distill", "kind": model.kind}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

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
        chat = parse_chat_request(raw, config.default_max_tokens, config.max_n)
        model = models.get(chat.model)
        if model is None:
            raise RequestError(404, f"The model `{chat.model}` does not exist. Served: {sorted(models)}.",
                               code="model_not_found", param="model")  # fmt: skip
        return chat, model, model.prepare(chat)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:  # parsing, image decoding and tokenization are CPU work: keep them off the event loop
            chat, model, prepared = await run_in_threadpool(prepare, await request.body())
            choices = await asyncio.wrap_future(batcher.submit(model, prepared, chat.params, chat.request_id))
        except RequestError as e:
            return JSONResponse(e.body(), status_code=e.status)
        except ServerStopping as e:
            return error(503, str(e), "server_stopping")
        except Exception as e:
            log.exception("request failed")
            return error(500, f"generation failed: {type(e).__name__}: {e}", "generation_failed")
        return completion_body(chat, model.model_id, prepared.prompt_tokens, choices)

    return app


def load_models(specs: list[str], device: str, dtype: str) -> dict:
    """{model id: LocalModel} for the `--model` specs; ValueError on duplicate ids or missing directories."""
    from distill.serve.local_engine import LocalModel, parse_model_spec
    from distill.serve.local_models import resolve_local_model

    models: dict = {}
    for spec in specs:
        model_id, path = parse_model_spec(spec)
        if model_id in models:
            raise ValueError(f"two models share the id {model_id!r}; name them with NAME=PATH")
        resolved = resolve_local_model(path)
        if not resolved.is_dir():
            raise ValueError(f"--model {spec}: {resolved} is not a model directory")
        models[model_id] = LocalModel(model_id, resolved, device=device, dtype=dtype)
    return models


def main(config: ServeConfig) -> int:
    import uvicorn

    from distill.serve.batcher import Batcher

    api_key = None
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            print(f"distill serve: environment variable {config.api_key_env} (--api_key_env) is not set or empty",
                  file=sys.stderr)  # fmt: skip
            return 2
    try:
        models = load_models(config.model, config.device, config.dtype)
    except (ValueError, OSError) as e:
        print(f"distill serve: {e}", file=sys.stderr)
        return 2
    if not api_key and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without --api_key_env: anyone who can reach this port can use the models",
                    config.host)  # fmt: skip
    batcher = Batcher(config.max_batch_size, config.batch_wait_ms / 1000)
    batcher.start()
    app = build_app(models, batcher, config, api_key)

    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as e:
        batcher.stop()
        print(f"distill serve: cannot listen on {config.host}:{config.port}: {e}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if family == socket.AF_INET6 else host

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:  # listening now: safe for a parent process to connect
                print(f"{LISTENING} http://{url_host}:{port}/v1 (models: {', '.join(models)})", flush=True)

    # log_config=None: uvicorn's records (access log included) go through our root logger to stderr, so stdout
    # carries only the listening line and a parent that stops reading stdout can never block the server.
    server = Server(uvicorn.Config(app, log_config=None, access_log=True, timeout_graceful_shutdown=30))

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
    return 0


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["serve", *sys.argv[1:]]))
