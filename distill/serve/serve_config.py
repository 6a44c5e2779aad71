"""`distill serve`'s configuration: every flag with its help and its checks (one typed dataclass).

from distill.serve.serve_config import ServeConfig
config = ServeConfig(model=["smollm2"], port=0)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServeConfig:
    model: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Model to serve, repeatable: PATH (id = directory name), NAME=PATH, 'smollm2' (the "
            "embedded SmolLM2-135M-Instruct), or NAME=shape-scenes (the demo's pixel-reading image teacher).",
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
    max_request_tokens: int = field(
        default=32768, metadata={"help": "Largest n x max_tokens of one request (completion tokens it may cost)."}
    )
    max_body_mb: float = field(default=32.0, metadata={"help": "Largest request body (MiB); larger is a 413."})
    max_images: int = field(default=16, metadata={"help": "Most image_url parts in one request."})
    max_image_pixels: int = field(
        default=4096 * 4096, metadata={"help": "Most pixels per image (from its header, before decoding)."}
    )
    max_prompt_chars: int = field(
        default=0, metadata={"help": "Most characters of message text; 0 = 32 per token of the model's context."}
    )
    slice_tokens: int = field(
        default=16, metadata={"help": "Tokens a batch makes before it yields to waiting requests (then resumes)."}
    )
    drain_s: float = field(
        default=10.0, metadata={"help": "On SIGTERM, how long work in hand may finish before it gets a 503."}
    )
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
        if min(self.max_request_tokens, self.max_images, self.max_image_pixels, self.slice_tokens) < 1:
            raise ValueError("--max_request_tokens, --max_images, --max_image_pixels and --slice_tokens must be >= 1")
        if self.max_body_mb <= 0 or self.drain_s < 0 or self.max_prompt_chars < 0:
            raise ValueError("--max_body_mb must be > 0, --drain_s and --max_prompt_chars >= 0")

    def limits(self):
        from distill.serve.chat_request import RequestLimits

        return RequestLimits(max_n=self.max_n, max_request_tokens=self.max_request_tokens, max_images=self.max_images,
                             max_image_pixels=self.max_image_pixels,
                             max_image_bytes=int(self.max_body_mb * 2**20))  # fmt: skip
