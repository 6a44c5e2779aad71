"""Lineage of a trained model (the student `distill train` writes; `distill embed` reuses the card's parts): what data,
teacher, prompts, filter and config made it, and its model card.

`distill train` writes `<output_dir>/lineage.json` and the model card `<output_dir>/README.md` from:
- the resolved train config (the same dict saved as `config.yaml`);
- the export manifest `manifest.json`, looked up in the dataset dir given to `train` (or its parent, when the
  `dataset/` subdir of an older export was given): input file + sha256, teacher models, prompt ids and shas, modes,
  tasks, and the filter summary `export` was given (`--filter_summary`, wired by `distill run`: keep rates);
- the pre-flight report, the label-mask audit and the training result.
Both are meant to be published with the model: local paths appear only as their last component. The card's YAML is
what the Hub indexes (`huggingface_hub.ModelCard`): base_model (a hub id; a local base is named in the body only),
datasets, pipeline_tag image-text-to-text, library_name (transformers, or peft for an adapter), tags, license.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from distill.io import write_json_atomic, write_text_atomic

TAGS = ["distill", "think-then-embed", "reasoning", "sft", "trl"]
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# config keys that hold local paths (only their last component is published)
PATH_KEYS = (
    "model_name_or_path",
    "dataset_path",
    "output_dir",
    "logging_dir",
    "deepspeed",
    "resume_from_checkpoint",
    "tokenizer_name_or_path",
    "base_model",
    "manifest_path",
    "input",
    "image_root",
    "filter_summary_path",
    "merged_model",
    "run_name",
)


def is_hub_id(name: str | None) -> bool:
    """True for `org/name` that is not a local path (so the Hub can resolve it)."""
    return bool(name) and bool(_HUB_ID.match(name)) and not os.path.exists(name)


def public(obj, key: str = ""):
    """`obj` with every local path under PATH_KEYS cut to its last component (hub ids are kept)."""
    if isinstance(obj, dict):
        return {k: public(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [public(v, key) for v in obj]
    if key in PATH_KEYS and isinstance(obj, str) and obj and not is_hub_id(obj):
        return Path(obj).name or obj
    return obj


def find_manifest(dataset_path: str) -> tuple[str | None, dict | None]:
    """(path, manifest) of the export that produced `dataset_path`, or (None, None)."""
    p = Path(dataset_path)
    for cand in (p / "manifest.json", p / "dataset" / "manifest.json", p.parent / "manifest.json"):
        if cand.is_file():
            return str(cand), json.loads(cand.read_text())
    return None, None


def _rates(obj, prefix: str = "") -> dict[str, float]:
    """Numeric entries of a filter summary whose key names a keep/reject rate, flattened to dotted keys."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}{k}"
            if (
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and any(w in k for w in ("rate", "fraction", "keep"))
            ):
                out[key] = v
            elif isinstance(v, dict):
                out.update(_rates(v, key + "."))
    return out


def build_lineage(config: dict, dataset_path: str, preflight: dict, audit: dict | None, result: dict | None) -> dict:
    """The lineage record (publishable: local paths cut to their last component)."""
    manifest_path, manifest = find_manifest(dataset_path)
    datasets = [d for d in (config.get("dataset_hub_id"), (manifest or {}).get("hub_repo")) if d]
    return public({
        "base_model": config.get("base_model") or config.get("model_name_or_path"),
        "adapter": bool(config.get("use_peft")),
        "datasets": list(dict.fromkeys(datasets)),
        "dataset_path": dataset_path,
        "manifest_path": manifest_path,
        "manifest": manifest,
        "filter_keep_rates": _rates((manifest or {}).get("filter_summary") or {}),
        "preflight": preflight,
        "label_audit": audit,
        "result": result,
        "config": config,
    })  # fmt: skip


def card_data(lineage: dict, adapter: bool | None = None):
    """The card's YAML as `huggingface_hub.ModelCardData` (adapter: library peft; None: from the lineage)."""
    from huggingface_hub import ModelCardData

    adapter = lineage.get("adapter") if adapter is None else adapter
    base = lineage.get("base_model")
    return ModelCardData(
        base_model=base if is_hub_id(base) else None,
        datasets=lineage.get("datasets") or None,
        pipeline_tag="image-text-to-text",
        library_name="peft" if adapter else "transformers",
        tags=TAGS
        + (["lora"] if adapter else [])
        + (["base_model:adapter:" + base] if adapter and is_hub_id(base) else []),
        license=lineage["config"].get("license"),
    )


def model_card(lineage: dict, adapter: bool | None = None, merged_of: str | None = None) -> str:
    """The model card (YAML front matter + body). `merged_of`: this is the merged copy of that adapter repo/dir."""
    m = lineage.get("manifest") or {}
    teacher = m.get("teacher") or {}
    cfg = lineage["config"]
    adapter = lineage.get("adapter") if adapter is None else adapter
    base = lineage["base_model"]
    kind = "LoRA adapter" if adapter else ("merged LoRA student" if merged_of else "student")
    use = ["```python", "from transformers import AutoModelForImageTextToText, AutoProcessor"]
    if adapter:
        use += ["from peft import PeftConfig, PeftModel", "", 'path = "<this repo or folder>"',
                "base = AutoModelForImageTextToText.from_pretrained(PeftConfig.from_pretrained(path).base_model_name_or_path)",
                "model = PeftModel.from_pretrained(base, path)"]  # fmt: skip
    else:
        use += ["", 'path = "<this repo or folder>"', "model = AutoModelForImageTextToText.from_pretrained(path)"]
    use += ["processor = AutoProcessor.from_pretrained(path)", "```"]
    lines = ["---", card_data(lineage, adapter).to_yaml(), "---", "", f"# {cfg.get('hub_model_id') or Path(cfg.get('output_dir') or 'student').name}", "",
             f"A {kind} finetuned with `distill train` from `{base}`"
             f"{'' if is_hub_id(base) else ' (a local checkpoint; name it with the `base_model` recipe field)'} on "
             "teacher traces (embedding-centric reasoning, `<think>…</think>` + final part; Think-Then-Embed, "
             "arXiv 2510.05014). Prompt it with the instruction and query (images first) and it writes the reasoning "
             "that the embedder reads.", ""]  # fmt: skip
    if merged_of:
        lines += [f"The LoRA adapter `{merged_of}` merged into the base weights: a plain transformers model.", ""]
    lines += ["## Use", "", *use, "", "## Data", ""]
    if m:
        lines += [f"- export of `{m.get('input')}` (sha256 `{m.get('input_sha256')}`)"
                  + (f", published as {', '.join(lineage['datasets'])}" if lineage.get("datasets") else ""),
                  f"- rows: {m.get('rows_in')} kept traces in, {m.get('rows_out')} exported; tasks {m.get('tasks')}",
                  f"- teacher models: {teacher.get('models')}; modes: {teacher.get('modes')}", "",
                  "| prompt id | prompt sha256 | rows |", "|---|---|---|"]  # fmt: skip
        for pid, shas in (teacher.get("prompts") or {}).items():
            lines += [f"| {pid} | `{sha}` | {n} |" for sha, n in shas.items()]
        rates = lineage["filter_keep_rates"]
        lines += ["", "- filter keep rates:" if m.get("filter_summary")
                  else "- filter summary: none given to the export"]  # fmt: skip
        lines += [f"  - {k}: {v}" for k, v in rates.items()]
    else:
        lines += ["- no export manifest found next to the dataset: lineage of the traces unknown"]
    pf, au, res = lineage["preflight"], lineage.get("label_audit") or {}, lineage.get("result") or {}
    lines += ["", "## Training", "",
              f"- pre-flight: {pf.get('rows_in')} rows, {pf.get('rows_kept')} kept, "
              f"{pf.get('dropped_over_max_length')} dropped over max_length={pf.get('max_length')}",
              f"- label audit: supervised fraction per role {au.get('supervised_fraction_per_role')}",
              f"- {res.get('global_batch') or 'global batch: not recorded'}",
              f"- lr {cfg.get('learning_rate')}, epochs {cfg.get('num_train_epochs')}, per-device batch "
              f"{cfg.get('per_device_train_batch_size')} x grad accum {cfg.get('gradient_accumulation_steps')}, "
              f"vision tower frozen: {cfg.get('freeze_vision_tower')}, projector frozen: {cfg.get('freeze_projector')},"
              f" LoRA: {cfg.get('use_peft')}, DeepSpeed: {cfg.get('deepspeed')}",
              f"- result: {json.dumps({k: v for k, v in res.items() if k != 'losses'})}", "",
              "## Resolved config", "", "```yaml", yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", ""]  # fmt: skip
    return "\n".join(lines)


def write_lineage(output_dir: str, lineage: dict, merged_dir: str | None = None) -> None:
    """lineage.json + README.md in `output_dir` (and in `merged_dir`, the merged copy of an adapter, if given)."""
    write_json_atomic(Path(output_dir) / "lineage.json", lineage)
    write_text_atomic(Path(output_dir) / "README.md", model_card(lineage))
    if merged_dir:
        name = lineage["config"].get("hub_model_id") or Path(lineage["config"].get("output_dir") or "adapter").name
        write_json_atomic(Path(merged_dir) / "lineage.json", lineage)
        write_text_atomic(Path(merged_dir) / "README.md", model_card(lineage, adapter=False, merged_of=name))
