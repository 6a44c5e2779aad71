"""`distill embed`'s config: sentence-transformers' training arguments (every TrainingArguments key, plus
`batch_sampler` and `multi_dataset_batch_sampler`) and the embedder-specific keys below. The backbone, dtype and LoRA
keys come from TRL's `ModelConfig`, as in `distill train`, so both recipes name them alike.

Global batch (contrastive): the pairs whose embeddings share one softmax. `global_batch_size` sets the per-device
batch to global / processes (with `gather_across_devices`, every device's anchors see the whole global batch as
candidates); gradient accumulation would not add negatives, so it must stay 1 then. GradCache
(`loss: CachedMultipleNegativesRankingLoss`) bounds memory by `mini_batch_size` pairs per forward, whatever the batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sentence_transformers import SentenceTransformerTrainingArguments

from distill.embed_text import PARTS
from distill.images import PixelBudget

LOSSES = ("MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss")
MISSING_TRACE = ("no_trace", "drop", "error")
POOLING = ("lasttoken", "mean", "cls", "max")


def parse_trace_files(value) -> dict[str, str]:
    """{name: path} from a YAML mapping or `name=path` strings (a bare path is named by its file stem)."""
    from distill.configs import named_items

    out = named_items(value, "embed: --traces", "embed: trace set name")
    if "none" in out:
        raise ValueError("embed: 'none' means training without traces; name the trace set otherwise")
    return out


@dataclass
class EmbedConfig(SentenceTransformerTrainingArguments, PixelBudget):
    """sentence-transformers' SentenceTransformerTrainingArguments, the image budget (`PixelBudget`: the VLM path's,
    set once per pipeline) and the keys below."""

    __yaml_types__ = {"traces": list[str] | dict[str, str] | None}  # YAML may give the NAME=PATH pairs as a mapping

    input: list[str] | None = field(
        default=None,
        metadata={"help": "Example rows: files or folders of per-dataset files (MMEB-train, MMEB eval or ours)."},
    )
    subset: str | None = field(default=None, metadata={"help": "MMEB dataset name when the file stem is not one."})
    image_root: str = field(default=".", metadata={"help": "Folder the rows' image paths are relative to."})
    traces: list[str] | None = field(
        default=None,
        metadata={"help": "Trace files: NAME=PATH ... (YAML: a mapping). Query-side rows condition the query; rows "
                  "with side: target condition the positive."},
    )  # fmt: skip
    trace_condition: str = field(
        default="none",
        metadata={"help": "Which trace set conditions the pairs: none (the baseline embedder) or a --traces name."},
    )
    trace_part: str = field(
        default="full", metadata={"help": "Trace part appended: full (as exported) | think | final | raw (as eval)."}
    )
    trace_dropout: float = field(
        default=0.0, metadata={"help": "Fraction of pairs trained without their trace (0..1; by a hash of seed, id)."}
    )
    missing_trace: str = field(
        default="no_trace",
        metadata={"help": "An example with no usable trace in the set: no_trace (train it without) | drop | error."},
    )
    num_negatives: int = field(
        default=1,
        metadata={"help": "Hard-negative columns per pair at most (MMEB neg_*, our negatives; rows with fewer are "
                  "topped up with other positives of the dataset); 0: in-batch negatives only."},
    )  # fmt: skip
    loss: str = field(
        default="MultipleNegativesRankingLoss",
        metadata={"help": "MultipleNegativesRankingLoss | CachedMultipleNegativesRankingLoss (GradCache)."},
    )
    temperature: float = field(default=0.02, metadata={"help": "InfoNCE temperature (TTE: 0.02); scale = 1/τ."})
    mini_batch_size: int = field(default=8, metadata={"help": "GradCache: pairs per forward (VLM2Vec: 8)."})
    gather_across_devices: bool = field(
        default=True, metadata={"help": "In-batch negatives from every device (TTE); no effect in one process."}
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "Pairs per contrastive batch over all processes; sets per_device_train_batch_size = it / "
                  "processes. None: per_device_train_batch_size as given."},
    )  # fmt: skip
    pooling: str = field(
        default="lasttoken",
        metadata={"help": "Pooling for a plain checkpoint (lasttoken: TTE/VLM2Vec); a sentence-transformers model "
                  "keeps its own."},
    )  # fmt: skip
    max_seq_length: int | None = field(default=None, metadata={"help": "Token limit per item; None: the model's."})
    base_model: str | None = field(
        default=None, metadata={"help": "The base's name in the model card (a hub id); None: model_name_or_path."}
    )
    license: str | None = field(default=None, metadata={"help": "Model card license (e.g. apache-2.0)."})
    push_to_hub: str | None = field(
        default=None,
        metadata={"help": "Hub model repo id to upload output_dir to once every file is final (private unless "
                  "hub_private_repo is false). The Trainer never pushes."},
    )  # fmt: skip
    resume_from_checkpoint: str | None = field(
        default="last",
        metadata={"help": "'last': the newest checkpoint in output_dir when there is one (a rerun resumes); a "
                  "checkpoint dir; none: start fresh."},
    )  # fmt: skip
    # TrainingArguments keys whose defaults differ for this stage
    batch_sampler: str = field(
        default="no_duplicates",
        metadata={"help": "batch_sampler | no_duplicates (no repeated text in a batch: a repeated positive would be "
                  "its own false negative) | group_by_label."},
    )  # fmt: skip
    multi_dataset_batch_sampler: str = field(
        default="proportional",
        metadata={"help": "proportional (each batch from one dataset, drawn ∝ its size) | round_robin."},
    )
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoint by steps (resume after kill -9)."})
    save_steps: float = field(default=100, metadata={"help": "Steps between checkpoints."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    logging_steps: float = field(default=10, metadata={"help": "Steps between log lines (loss, pairs/s)."})

    def __post_init__(self):
        self.traces = parse_trace_files(self.traces)
        if str(self.resume_from_checkpoint).lower() in ("none", "false", "null", ""):
            self.resume_from_checkpoint = None
        self.input = [self.input] if isinstance(self.input, str) else list(self.input or [])
        # We upload ourselves at the end, as `distill train` does (the Trainer would push at every save).
        if self.push_to_hub not in (None, False, "", "false", "False"):
            repo = self.hub_model_id if self.push_to_hub in (True, "true", "True") else self.push_to_hub
            if not repo:
                raise ValueError("embed: push_to_hub: true needs hub_model_id (or pass --push_to_hub REPO)")
            self.hub_model_id = repo
        self.hub_repo = self.hub_model_id if self.push_to_hub not in (None, False, "", "false", "False") else None
        self.push_to_hub = False
        if self.global_batch_size is not None:
            from distill.train.batch import launch_world_size

            world = launch_world_size()
            if self.global_batch_size % world or self.global_batch_size < world:
                raise ValueError(f"embed: global_batch_size {self.global_batch_size} is not a multiple of the "
                                 f"{world} processes")  # fmt: skip
            if self.gradient_accumulation_steps != 1:
                raise ValueError("embed: gradient_accumulation_steps must be 1 with global_batch_size (accumulation "
                                 "adds no in-batch negatives; GradCache bounds the memory instead)")  # fmt: skip
            self.per_device_train_batch_size = self.global_batch_size // world
        if self.deepspeed and "RANK" not in os.environ and "LOCAL_RANK" not in os.environ:
            from distill.train.config import single_process_deepspeed_env  # before the Trainer's args set up ranks

            single_process_deepspeed_env()
        super().__post_init__()
        checks = [("trace_part", self.trace_part, PARTS), ("missing_trace", self.missing_trace, MISSING_TRACE),
                  ("loss", self.loss, LOSSES), ("pooling", self.pooling, POOLING),
                  ("trace_condition", self.trace_condition, ("none", *self.traces))]  # fmt: skip
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"embed: --{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not self.input:
            raise ValueError("embed: --input is required (example rows: files or folders)")
        if not 0.0 <= self.trace_dropout < 1.0:
            raise ValueError(f"embed: trace_dropout must be in [0, 1), got {self.trace_dropout}")
        if not self.temperature > 0 or self.mini_batch_size < 1 or self.num_negatives < 0:
            raise ValueError("embed: need temperature > 0, mini_batch_size >= 1 and num_negatives >= 0")
        self.check_pixels()

    @property
    def scale(self) -> float:
        """The losses' similarity scale: 1 / temperature (τ = 0.02 -> 50)."""
        return 1.0 / self.temperature
