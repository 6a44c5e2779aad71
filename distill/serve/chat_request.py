"""The OpenAI chat-completions wire format for `distill serve`: parse and check a request body, build the response and
error bodies. Pure functions; no model here.

Accepted (as OpenAI documents them): `model`, `messages` (roles system | developer | user | assistant; content a string
or a list of `text` and `image_url` parts, images as base64 data URLs), `max_tokens` / `max_completion_tokens`,
`temperature`, `top_p`, `seed`, `n`, `stop`, and vLLM's extension `ignore_eos` (generate to `max_tokens`; for load
tests). Values that cannot be sampled are a 400, never a 500 that clients would
retry: `temperature` is 0 (greedy) or in [0.01, 2] (1e-300 divides logits into inf/nan), `n x max_tokens` is at most
`RequestLimits.max_request_tokens`. Images pass `distill.images.decode_data_url`'s size and pixel guards before any
pixel is decoded, at most `max_images` per request. Options this server cannot honour (`stream`, `logprobs`, `tools`, non-text
`response_format`, penalties, `logit_bias`) are refused with a 400 when set to a non-default value rather than silently
ignored; other unknown keys are ignored, as vLLM does.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import orjson
from PIL import Image

from distill.images import MAX_IMAGE_BYTES, ImageError, decode_data_url

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP = 4  # OpenAI's limit on stop sequences
MIN_TEMPERATURE = 0.01  # below this (and above 0) logits / temperature overflows float32 for ordinary logit ranges


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for; `distill serve` flags set them."""

    max_n: int = 16
    max_request_tokens: int = 32768  # n x max_tokens: the most completion tokens one request can cost
    max_images: int = 16
    max_image_pixels: int = 4096 * 4096  # per image, checked from the header before decoding
    max_image_bytes: int = MAX_IMAGE_BYTES


class RequestError(Exception):
    """A request the server refuses; rendered as OpenAI's `{"error": {...}}` body with `status`."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict:
        return error_body(self.message, status=self.status, code=self.code, param=self.param)


def error_body(message: str, status: int = 400, code: str | None = None, param: str | None = None) -> dict:
    """OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    n: int = 1
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class ChatRequest:
    """A checked request: `messages` hold text and `{"type": "image"}` parts; `images` in the order they appear."""

    model: str
    messages: list[dict]
    images: list[Image.Image]
    params: SamplingParams
    request_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")


def _bad(message: str, param: str | None = None) -> RequestError:
    return RequestError(400, message, code="invalid_request", param=param)


def _number(body: dict, key: str, default: float, lo: float, hi: float, *, integer: bool = False):
    value = body.get(key)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _bad(f"'{key}' must be {'an integer' if integer else 'a number'}, got {value!r}", key)
    if not lo <= value <= hi:
        raise _bad(f"'{key}' must be between {lo} and {hi}, got {value!r}", key)
    return value


def _refuse_unsupported(body: dict) -> None:
    checks = [
        ("stream", lambda v: v not in (None, False), "streaming is not supported by distill serve; send stream=false"),
        ("logprobs", lambda v: v not in (None, False), "logprobs are not supported by distill serve"),
        ("tools", lambda v: bool(v), "tool calls are not supported by distill serve"),
        ("logit_bias", lambda v: bool(v), "logit_bias is not supported by distill serve"),
        ("presence_penalty", lambda v: v not in (None, 0, 0.0), "presence_penalty is not supported by distill serve"),
        ("frequency_penalty", lambda v: v not in (None, 0, 0.0), "frequency_penalty is not supported by distill serve"),
        (
            "response_format",
            lambda v: v not in (None, {}) and not (isinstance(v, dict) and v.get("type") == "text"),
            "only response_format type 'text' is supported by distill serve",
        ),
    ]
    for key, is_set, message in checks:
        if key in body and is_set(body[key]):
            raise _bad(message, key)


def _image(part: dict, where: str, limits: RequestLimits) -> Image.Image:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str):
        raise _bad(f"{where}.image_url must be an object with a 'url' string", where)
    if not url.startswith("data:"):
        raise _bad(f"{where}: only base64 data URLs ('data:image/png;base64,...') are accepted; this server fetches "
                   "no remote URLs", where)  # fmt: skip
    try:
        return decode_data_url(url, max_pixels=limits.max_image_pixels, max_bytes=limits.max_image_bytes)
    except ImageError as e:
        raise _bad(f"{where}: invalid image data URL ({e.reason})", where) from None


def _message(i: int, msg, images: list[Image.Image], limits: RequestLimits) -> dict:
    where = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise _bad(f"{where} must be an object with 'role' and 'content'", where)
    role = ROLES.get(msg.get("role"))
    if role is None:
        raise _bad(f"{where}.role must be one of {sorted(ROLES)}, got {msg.get('role')!r}", f"{where}.role")
    content = msg.get("content")
    if isinstance(content, str):
        return {"role": role, "content": [{"type": "text", "text": content}]}
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of content parts", f"{where}.content")
    parts = []
    for j, part in enumerate(content):
        pw = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            if len(images) >= limits.max_images:
                raise _bad(f"{pw}: more than {limits.max_images} images in one request", pw)
            images.append(_image(part, pw, limits))
            parts.append({"type": "image"})
        else:
            raise _bad(f"{pw} must be {{'type': 'text', 'text': ...}} or {{'type': 'image_url', 'image_url': "
                       f"{{'url': 'data:...'}}}}, got type {kind!r}", pw)  # fmt: skip
    return {"role": role, "content": parts}


def parse_chat_request(raw: bytes, default_max_tokens: int, max_n: int | None = None,
                       limits: RequestLimits | None = None) -> ChatRequest:  # fmt: skip
    """A `ChatRequest` from a raw HTTP body; RequestError(400) naming the offending field otherwise."""
    limits = limits or RequestLimits()
    if max_n is not None:
        limits = RequestLimits(**{**limits.__dict__, "max_n": max_n})
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise _bad(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required (a string naming a served model; see GET /v1/models)", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' is required: a non-empty list of {role, content}", "messages")
    _refuse_unsupported(body)
    images: list[Image.Image] = []
    parsed = [_message(i, m, images, limits) for i, m in enumerate(messages)]

    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise _bad(f"'stop' must be a non-empty string or a list of at most {MAX_STOP} non-empty strings", "stop")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise _bad(f"'ignore_eos' must be a boolean, got {ignore_eos!r}", "ignore_eos")
    params = SamplingParams(
        max_tokens=_number(body, key, default_max_tokens, 1, 1 << 20, integer=True),
        temperature=float(_number(body, "temperature", 1.0, 0.0, 2.0)),
        top_p=float(_number(body, "top_p", 1.0, 0.0, 1.0)),
        seed=_number(body, "seed", None, -(1 << 63), (1 << 64) - 1, integer=True),
        n=_number(body, "n", 1, 1, limits.max_n, integer=True),
        stop=tuple(stop),
        ignore_eos=ignore_eos,
    )
    if params.top_p == 0.0:
        raise _bad("'top_p' must be greater than 0", "top_p")
    if 0.0 < params.temperature < MIN_TEMPERATURE:
        raise _bad(f"'temperature' must be 0 (greedy) or at least {MIN_TEMPERATURE}, got {params.temperature!r}: "
                   "smaller values cannot be sampled in floating point", "temperature")  # fmt: skip
    if params.n * params.max_tokens > limits.max_request_tokens:
        raise _bad(f"n x max_tokens = {params.n} x {params.max_tokens} = {params.n * params.max_tokens} completion tokens "
                   f"is over this server's per-request limit of {limits.max_request_tokens}", "max_tokens")  # fmt: skip
    return ChatRequest(model=model, messages=parsed, images=images, params=params)


@dataclass
class Choice:
    text: str
    finish_reason: str  # "stop" | "length"
    completion_tokens: int


def completion_body(request: ChatRequest, model_id: str, prompt_tokens: int, choices: list[Choice]) -> dict:
    """The `chat.completion` object OpenAI returns (prompt tokens counted once, completion tokens over all choices)."""
    completion_tokens = sum(c.completion_tokens for c in choices)
    return {
        "id": request.request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": None,
    }
