"""`distill generate`'s configuration: every flag with its help (one typed dataclass, checked on construction).

from distill.teacher.generate_config import GenerateConfig
config = GenerateConfig(input="data/demo/train", output="runs/x/traces.jsonl", model="teacher")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.client.batch import BatchSettings
from distill.client.config import ClientConfig, ClientFields, client_config, request_sampling
from distill.client.journal import journal_path
from distill.image_store import VIDEO_PARTS
from distill.images import PixelBudget
from distill.stage import contract_paths
from distill.teacher.prompts import MODES, SIDES
from distill.video import FRAME_MAX_PIXELS, FRAME_MIN_PIXELS, NUM_FRAMES


def _f(default, help_: str, **kw):
    return field(default=default, metadata={"help": help_}, **kw)


@dataclass
class GenerateConfig(ClientFields, PixelBudget):
    """generate's own flags, plus the endpoint (`ClientFields`: base_urls, timeouts, breaker, concurrency) and the
    image budget (`PixelBudget`) parts it shares with the other stages."""

    input: str = _f(None, "Examples: .jsonl/.parquet/saved dataset, or a dir of per-subset files (required).")
    output: str = _f(None, "Trace JSONL to write (required); journal/summary/config are written beside it.")
    image_root: str = _f(".", "Directory the examples' image paths are relative to.")
    subset: str | None = _f(None, "MMEB subset name (sets the task type); default: the file stem.")
    strict: bool = _f(False, "Stop with exit 1 on the first bad input row instead of reporting it.")
    prompts_dir: str | None = _f(
        None, "Directory of prompt templates (one YAML per task type); None = the installed ones."
    )
    mode: str = _f("blind", "blind: the teacher sees the query only; hinted: also the gold answer/target.")
    side: str = _f("query", "query: reason about the query; target: describe the positive (retrieval target side).")
    model: str = _f(None, "Model name sent in each request (required).")
    image_model: str | None = _f(None, "Model name for requests that carry images; None = `model`.")
    num_samples: int = _f(1, "Traces per example (sample_index 0..num_samples-1).")
    temperature: float = _f(0.7, "Sampling temperature.")
    top_p: float | None = _f(None, "Nucleus sampling; None = server default.")
    max_tokens: int = _f(1024, "Completion token cap; answers that hit it are status=truncated.")
    seed: int | None = _f(None, "Base seed; sample i sends seed+i. None = no seed.")
    num_frames: int = _f(NUM_FRAMES, "Frames sampled uniformly from each video (MMEB-V2 uses 8).")
    frame_min_pixels: int = _f(FRAME_MIN_PIXELS, "Each video frame is resized to at least this many pixels ...")
    frame_max_pixels: int = _f(FRAME_MAX_PIXELS, "... and at most this many (per frame; keep equal to export's).")
    video_parts: str = _f(
        "frames",
        "How a video reaches the teacher: frames (one image part per sampled frame, any "
        "server) or native (one video_url part of JPEG frames: vLLM's Qwen2-VL video input).",
    )
    shard_index: int = _f(0, "This shard (0-based), for Slurm arrays / Ray tasks.")
    num_shards: int = _f(1, "Number of shards; examples split by sha256(id) mod num_shards.")
    max_examples: int | None = _f(None, "Only the first N examples of this shard (smoke runs); None = all.")
    dry_run: bool = _f(False, "Print request count, approx prompt tokens and cost; send nothing.")
    price_input_per_mtok: float | None = _f(None, "USD per million prompt tokens (dry-run cost); None = no cost.")
    price_output_per_mtok: float | None = _f(None, "USD per million completion tokens (dry-run upper bound).")
    progress: bool = _f(True, "Show a tqdm progress bar.")
    batch: bool = _f(False, "Send through the OpenAI Batch API (or vllm run-batch files) instead of online requests.")
    batch_submit: bool = _f(True, "With --batch: false = only write the batch input files (for vllm run-batch).")
    batch_results: list[str] = field(default_factory=list, metadata={
        "help": "With --batch: batch output files/globs to ingest (vllm run-batch output) instead of submitting."})  # fmt: skip
    batch_max_requests: int = _f(50_000, "Requests per batch file at most (the OpenAI Batch API limit).")
    batch_max_bytes: int = _f(200_000_000, "Bytes per batch file at most (the OpenAI Batch API limit, 200 MB).")
    batch_poll_s: float = _f(30.0, "Seconds between batch status polls.")
    batch_rounds: int = _f(2, "Batches per run: the first, then resubmissions of expired/retryable failures.")
    batch_discount: float = _f(0.5, "Batch price / online price, for the dry-run cost (OpenAI: half price).")

    def __post_init__(self):
        for name in ("input", "output", "model"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if self.mode not in MODES or self.side not in SIDES:
            raise ValueError(f"mode must be one of {MODES}, side one of {SIDES}")
        if self.video_parts not in VIDEO_PARTS:
            raise ValueError(f"video_parts must be one of {', '.join(VIDEO_PARTS)}, got {self.video_parts!r}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"need 0 <= shard_index < num_shards, got {self.shard_index}/{self.num_shards}")
        if self.num_samples < 1 or self.max_tokens < 1:
            raise ValueError("need num_samples >= 1 and max_tokens >= 1")
        self.check_pixels()
        self.check_client()
        if self.batch_rounds < 1 or self.batch_max_requests < 1 or self.batch_max_bytes < 1024 or self.batch_poll_s < 0:
            raise ValueError(
                "need batch_rounds >= 1, batch_max_requests >= 1, batch_max_bytes >= 1024, batch_poll_s >= 0"
            )

    def client(self) -> ClientConfig:
        return client_config(self, model=self.model, progress=self.progress)

    def sampling(self, sample_index: int) -> dict:
        return request_sampling(self.temperature, self.top_p, self.max_tokens, self.seed, sample_index)

    def paths(self) -> dict[str, Path]:
        """The journal (`<stem>.journal.jsonl`), the summary and the batch state (`<stem>.batch`) of this output."""
        out = Path(self.output)
        return {"journal": journal_path(out), "summary": contract_paths(out)[1],
                "batch": out.with_name(f"{out.name.removesuffix('.jsonl')}.batch")}  # fmt: skip

    def batch_settings(self) -> BatchSettings:
        return BatchSettings(self.paths()["batch"], self.batch_submit, tuple(self.batch_results),
                             self.batch_max_requests, self.batch_max_bytes, self.batch_poll_s, self.batch_rounds)  # fmt: skip
