"""`distill embed`: train TTE's trace-conditioned embedder on example rows + traces, with sentence-transformers.

    distill embed --config recipes/demo/embed.yaml                                  # baseline: no traces
    distill embed --config recipes/demo/embed.yaml --traces teacher=runs/demo/kept.jsonl \
        --trace_condition teacher --output_dir runs/demo/embed
    accelerate launch --config_file recipes/accelerate/zero2.yaml -m distill.cli embed \
        --config recipes/qwen2vl-2b/embed_lora.yaml

Steps: read and check the examples and the conditioning trace set (one line per problem, exit 2), build the model
(`distill.embed.model`), build the pairs (`distill.embed.pairs`: the text `distill eval` embeds), check every image
the model will open, train with `SentenceTransformerTrainer` (one dataset per MMEB dataset, homogeneous batches drawn
∝ dataset size; InfoNCE at τ = 1/scale; checkpoints every `save_steps`, a rerun resumes from the newest), save the
model to `output_dir` (stock `SentenceTransformer(output_dir)` loads it), then `lineage.json`, the model card
`README.md`, `config.yaml` and `summary.json` (the stage contract, `distill.stage`), and push when asked.
Progress: every `logging_steps` a log line with the loss and pairs/s.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path

from transformers import TrainerCallback
from trl import ModelConfig

from distill.embed.config import EmbedConfig
from distill.embed.pairs import InputError
from distill.resume import resume_checkpoint
from distill.stage import DataError, Paths, Stage

log = logging.getLogger(__name__)
__all__ = ["STAGE", "EmbedConfig", "ModelConfig", "main", "run"]


def _trainer_class():
    """sentence-transformers' trainer, resuming a LoRA run from its checkpoint's adapter (the library reloads a
    checkpoint as a whole SentenceTransformer, which for an adapter needs peft >= 0.22: see `model.add_lora`)."""
    from sentence_transformers import SentenceTransformerTrainer

    from distill.embed.model import peft_backbone

    class EmbedTrainer(SentenceTransformerTrainer):
        def _load_from_checkpoint(self, checkpoint_path: str, *args, **kwargs) -> None:
            backbone = peft_backbone(self.model)
            if backbone is None:
                return super()._load_from_checkpoint(checkpoint_path, *args, **kwargs)
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(backbone, load_file(str(Path(checkpoint_path) / "adapter_model.safetensors")))

    return EmbedTrainer


class PairsPerSecond(TrainerCallback):
    """Logs loss and pairs/s (pairs = global batch x steps since the last log) every `logging_steps`."""

    def __init__(self, global_batch: int):
        self.global_batch, self.rates = global_batch, []
        self._t, self._step = None, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t, self._step = time.time(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._t is None or "loss" not in (logs or {}) or state.global_step == self._step:
            return
        now = time.time()
        rate = self.global_batch * (state.global_step - self._step) / max(now - self._t, 1e-9)
        self.rates.append(round(rate, 2))
        self._t, self._step = now, state.global_step
        if state.is_world_process_zero:  # one line a step, not one per process
            log.info("step %d/%d  loss %.4f  %.1f pairs/s", state.global_step, state.max_steps, logs["loss"], rate)


def _columns(rows: list[list], vlm: bool) -> dict[str, list]:
    """Pair rows -> dataset columns anchor, positive, negative_1.. (cells: text, or {text, images} for a VLM)."""
    names = ["anchor", "positive", *(f"negative_{i}" for i in range(1, len(rows[0]) - 1))]
    cell = (lambda item: {"text": item[0], "images": list(item[1])}) if vlm else (lambda item: item[0])
    return {name: [cell(r[j]) for r in rows] for j, name in enumerate(names)}


def _check_images(examples, image_root: str) -> None:
    """InputError naming file, line and reason for every example image the VLM would fail to open."""
    from distill.embed.pairs import raise_problems
    from distill.embed_text import VIDEO, visuals
    from distill.images import ImageError, check_ref

    status, problems = {}, []
    for e in examples:
        sides = [e.row["query"], e.row["positive"], *(e.row.get("negatives") or [])]
        for entry in [v for s in sides for v in visuals(s) if not v.startswith(VIDEO)]:
            if entry not in status:
                try:
                    check_ref(image_root, entry)  # a path or an embedded page
                    status[entry] = None
                except ImageError as err:
                    status[entry] = err.reason
            if status[entry] is not None:
                problems.append(f"{e.file}:{e.line}: image {entry}: {status[entry]}")
    raise_problems(problems, f"examples reference unreadable images (image_root {image_root})")


def _loss(model, config: EmbedConfig):
    from sentence_transformers.sentence_transformer import losses

    common = {"scale": config.scale, "gather_across_devices": config.gather_across_devices}
    if config.loss == "CachedMultipleNegativesRankingLoss":
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size, **common)
    return losses.MultipleNegativesRankingLoss(model, **common)


def run(config: EmbedConfig, model_args: ModelConfig) -> dict:
    """Train; returns the summary on the main process (None on other ranks). InputError for bad inputs (pairs)."""
    from datasets import Dataset, DatasetDict
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
    from transformers import set_seed

    from distill.configs import config_dict
    from distill.embed.card import build_lineage, write_card
    from distill.embed.model import InputMaker, build_model, kit_processor, peft_backbone, save_merged, uses_images
    from distill.embed.pairs import build_pairs, load_examples_checked, load_traces
    from distill.io import umask_mode
    from distill.scoring.embedders import resolve_model_path
    from distill.stage import summary as stage_summary

    t0 = time.time()
    examples = load_examples_checked(config.input, config.subset, config.image_root)
    traces = None
    if config.trace_condition != "none":
        traces = load_traces(config.trace_condition, config.traces[config.trace_condition], examples,
                             config.trace_part)  # fmt: skip
    # seeded before the model is built, as Trainer does before `model_init`: LoRA's A matrices are drawn at random
    # here, before the Trainer seeds anything, so an unseeded run (and the reference a resumed run is checked
    # against) would start from different adapters each time
    set_seed(config.seed)
    try:
        model = build_model(resolve_model_path(model_args.model_name_or_path), model_args, config)
    except (OSError, ValueError, ImportError) as e:  # no such checkpoint, not a model, an unknown architecture
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"model {model_args.model_name_or_path}: cannot load: {first}") from e
    vlm = uses_images(model)
    pairs, stats = build_pairs(examples, traces, dropout=config.trace_dropout, seed=config.seed,
                               num_negatives=config.num_negatives, uses_images=vlm,
                               missing_trace=config.missing_trace)  # fmt: skip
    if vlm:
        _check_images(examples, config.image_root)
    data = DatasetDict({ds: Dataset.from_dict(_columns(rows, vlm)) for ds, rows in pairs.items()})
    make = InputMaker(vlm, config.image_root)
    collator = SentenceTransformerDataCollator(
        preprocess_fn=lambda inputs, **kw: model.preprocess([make(x) for x in inputs], **kw)
    )
    global_batch = config.per_device_train_batch_size * config.world_size * config.gradient_accumulation_steps
    if config.global_batch_size is not None and global_batch != config.global_batch_size:
        raise InputError(f"global batch {global_batch} ({config.world_size} processes training), not "
                         f"global_batch_size {config.global_batch_size}: WORLD_SIZE at launch differs")  # fmt: skip
    progress = PairsPerSecond(global_batch)
    out = Path(config.output_dir)
    resolved = {**config_dict(config, model_args), "base_model": config.base_model or model_args.model_name_or_path}
    with kit_processor():  # checkpoints reload through it on resume
        trainer = _trainer_class()(model=model, args=config, train_dataset=data, loss=_loss(model, config),
                                   data_collator=collator, callbacks=[progress])  # fmt: skip
        log.info("%d pairs over %d datasets; global batch %d = %d per device x %d processes; loss %s, τ %g",
                 stats["pairs"], len(pairs), global_batch, config.per_device_train_batch_size, config.world_size,
                 config.loss, config.temperature)  # fmt: skip
        t_train = time.time()
        train_out = trainer.train(resume_from_checkpoint=resume_checkpoint(config.resume_from_checkpoint, out))
        train_seconds = time.time() - t_train
    if trainer.state.global_step == 0:  # the Trainer ends "successfully" when the sampler yields no batch at all
        drop_last = ", and this launch drops the last, incomplete batch" if config.dataloader_drop_last else ""
        raise DataError(f"no training step ran: {stats['pairs']} pairs made no batch of "
                        f"{config.per_device_train_batch_size} (the no-duplicates sampler puts no two equal texts in "
                        f"one batch{drop_last}): lower per_device_train_batch_size, or "
                        "batch_sampler: batch_sampler")  # fmt: skip
    adapter = None
    if peft_backbone(model) is None:
        trainer.save_model(config.output_dir)  # on every rank: under ZeRO-3 the weights are gathered for the save
    elif trainer.is_world_process_zero():
        adapter = save_merged(model, config.output_dir)
    result = {"train_loss": train_out.training_loss, "global_step": trainer.state.global_step,
              "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
              # the median log window after the first (which holds the warm-up: allocations, first kernels)
              "pairs_per_second": statistics.median(progress.rates[1:] or progress.rates) if progress.rates else None,
              "pairs_per_second_log": progress.rates, "train_seconds": round(train_seconds, 2),
              "global_batch_size": global_batch,
              "global_batch": f"global batch {global_batch} = {config.per_device_train_batch_size} per device x "
                              f"{config.world_size} processes x {config.gradient_accumulation_steps} accumulation",
              "uses_images": vlm, "lora_adapter": adapter}  # fmt: skip
    if not trainer.is_world_process_zero():
        return None  # the main process alone writes the card, lineage and summary
    write_card(config.output_dir, build_lineage(resolved, traces, stats, result))
    umask_mode(out.rglob("*.safetensors"))  # safetensors writes weights 0600: a serving container could not read them
    log.info("embedder trained: %d steps, loss %.4f -> %s", result["global_step"], result["train_loss"], out)
    dropped = {k.removeprefix("dropped_"): v for k, v in stats.items() if k.startswith("dropped_") and v}
    return stage_summary("embed", len(examples), stats["pairs"], time.time() - t0, dropped=dropped, pairs=stats,
                         trace_condition=config.trace_condition, loss=config.loss, temperature=config.temperature,
                         **result)  # fmt: skip


def _push(summary: dict, config: EmbedConfig, model_args: ModelConfig) -> None:
    """--push_to_hub: upload output_dir (not checkpoints or local records) once every file is final; a failure is
    one line and the local outputs stay valid."""
    from distill.hub import push_folder, upload_plan
    from distill.stage import StageError

    if not config.hub_repo:
        return
    skip = ("checkpoint-", "runs/", "config.yaml", "summary.json", "training_args.bin")
    files = [f for f in upload_plan(config.output_dir, ["*"]) if not f.startswith(skip)]
    private = True if config.hub_private_repo is None else bool(config.hub_private_repo)
    try:
        url = push_folder(config.output_dir, config.hub_repo, "model", files, private=private)
    except Exception as e:  # network, auth, offline mode
        raise StageError(f"push to {config.hub_repo} failed: {type(e).__name__}: {e}") from None
    log.info("pushed %s -> %s", config.output_dir, url)


def _check_model(config: EmbedConfig, model_args: ModelConfig) -> None:
    """A model is named, and a local one exists (a hub id `org/name` or `package:NAME` is resolved when loading)."""
    from distill.lineage import is_hub_id

    name = model_args.model_name_or_path
    if not name:
        raise InputError("model_name_or_path is required (a checkpoint folder, a hub id or package:NAME)")
    if not name.startswith("package:") and not is_hub_id(name) and not Path(name).exists():
        raise InputError(f"model {name}: no such folder (nor a hub id org/name)")


STAGE = Stage(
    "embed",
    (EmbedConfig, ModelConfig),
    run,
    output="output_dir",
    writes="the SentenceTransformer model, checkpoint-N/, lineage.json and the model card README.md in --output_dir",
    paths=lambda c, m: Paths(reads=[*c.input, *c.traces.values(), c.image_root], write_dirs=[c.output_dir]),
    check=_check_model,
    publish=_push,
)
main = STAGE.main


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["embed", *sys.argv[1:]]))
