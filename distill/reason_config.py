"""`distill reason`'s configuration: every flag with its help (one typed dataclass composing the endpoint and image
budget parts, checked on construction).

from distill.reason_config import ReasonConfig
config = ReasonConfig(input="data/demo/eval", output="runs/x/traces.jsonl", model="runs/demo/train/model")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.chat_format import SIDES
from distill.client.config import ClientConfig, ClientFields, client_config, request_sampling
from distill.client.journal import journal_path
from distill.images import PixelBudget
from distill.stage import contract_paths

BACKENDS = ("hf", "openai")


def _f(default, help_: str, **kw):
    return field(default=default, metadata={"help": help_}, **kw)


@dataclass
class ReasonConfig(ClientFields, PixelBudget):
    """reason's own flags, plus the endpoint part (`ClientFields`, used by the openai backend) and the image budget
    (`PixelBudget`: use the export's, the one the student was trained with)."""

    input: str = _f(None, "Examples: .jsonl/.parquet/saved dataset, or a dir of per-subset files (required).")
    output: str = _f(None, "Trace JSONL to write (required); journal/summary/config are written beside it.")
    image_root: str = _f(".", "Directory the examples' image paths are relative to.")
    subset: str | None = _f(None, "MMEB subset name (sets the task type); default: the file stem.")
    strict: bool = _f(False, "Stop with exit 1 on the first bad input row instead of reporting it.")
    backend: str = _f("hf", "hf: the checkpoint in-process (transformers); openai: an endpoint serving the student.")
    model: str = _f(None, "hf: checkpoint or LoRA adapter directory; openai: the served model name (required).")
    base_model: str | None = _f(None, "hf, LoRA adapter: its base checkpoint; None: adapter_config.json's base.")
    name: str | None = _f(None, "Name rows record as the writer (teacher.model); None: --model.")
    side: str = _f("query", f"Which side of the example the student reasons about ({', '.join(SIDES)}).")
    system_prompt: str | None = _f(None, "System message; must be the one `distill export` trained with (None: none).")
    num_samples: int = _f(1, "Traces per example (sample_index 0..num_samples-1); > 1 needs temperature > 0.")
    temperature: float = _f(0.0, "Sampling temperature; 0 = greedy.")
    top_p: float | None = _f(None, "Nucleus sampling; None = 1.0 (hf) / the server's default (openai).")
    max_new_tokens: int = _f(512, "Completion token cap; answers that hit it are status=truncated.")
    seed: int | None = _f(None, "hf: torch seed before generating; openai: sample i sends seed+i. None: no seed.")
    batch_size: int = _f(16, "hf: rows per batched generate call.")
    device: str = _f("auto", "hf: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    dtype: str = _f("auto", "hf: auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16, float32.")
    shard_index: int = _f(0, "This shard (0-based); examples split by sha256(id) mod num_shards, as in generate.")
    num_shards: int = _f(1, "Number of shards.")
    max_examples: int | None = _f(None, "Only the first N examples of this shard (smoke runs); None = all.")
    progress: bool = _f(True, "Show a tqdm progress bar (rows/s, tokens/s).")

    def __post_init__(self):
        for name in ("input", "output", "model"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if self.backend not in BACKENDS or self.side not in SIDES:
            raise ValueError(f"backend must be one of {BACKENDS}, side one of {SIDES}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"need 0 <= shard_index < num_shards, got {self.shard_index}/{self.num_shards}")
        if self.num_samples < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("need num_samples >= 1, max_new_tokens >= 1 and batch_size >= 1")
        if self.num_samples > 1 and self.temperature <= 0:
            raise ValueError("num_samples > 1 with greedy decoding (temperature 0) gives identical samples")
        self.check_pixels()
        self.check_client()

    def client(self) -> ClientConfig:
        return client_config(self, model=self.model, progress=self.progress)

    def sampling(self, sample_index: int) -> dict:
        return request_sampling(self.temperature, self.top_p, self.max_new_tokens, self.seed, sample_index)

    def paths(self) -> dict[str, Path]:
        return {"journal": journal_path(self.output), "summary": contract_paths(self.output)[1]}
