"""Lineage of a trained student: what data, teacher, prompts, filter and config made it.

`distill train` writes `<output_dir>/lineage.json` and the model card `<output_dir>/README.md` from:
- the resolved train config (the same dict saved as `config.yaml`);
- the export manifest `manifest.json`, looked up in the dataset dir given to `train` (or its parent, when the
  `dataset/` subdir was given): input file + sha256, teacher models, prompt ids and shas, modes, tasks, and the filter
  summary `export` was given (`--filter_summary`, wired by `distill run`: keep rates);
- the pre-flight report, the label-mask audit and the training result.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distill.io import write_json_atomic, write_text_atomic


def find_manifest(dataset_path: str) -> tuple[str | None, dict | None]:
    """(path, manifest) of the export that produced `dataset_path`, or (None, None)."""
    p = Path(dataset_path)
    for cand in (p / "manifest.json", p.parent / "manifest.json"):
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
    manifest_path, manifest = find_manifest(dataset_path)
    return {
        "base_model": config.get("model_name_or_path"),
        "dataset_path": str(Path(dataset_path).resolve()),
        "manifest_path": manifest_path,
        "manifest": manifest,
        "filter_keep_rates": _rates((manifest or {}).get("filter_summary") or {}),
        "preflight": preflight,
        "label_audit": audit,
        "result": result,
        "config": config,
    }


def model_card(lineage: dict) -> str:
    m = lineage.get("manifest") or {}
    teacher = m.get("teacher") or {}
    cfg = lineage["config"]
    lines = ["---", "library_name: transformers", "tags: [distill, think-then-embed, sft, trl]", "---", "",
             f"# {Path(cfg.get('output_dir') or 'student').name}", "",
             f"Student reasoner finetuned with `distill train` from `{lineage['base_model']}` on teacher traces "
             "(embedding-centric reasoning, `<think>…</think>` + final part).", "", "## Data", ""]  # fmt: skip
    if m:
        lines += [f"- export: `{lineage['dataset_path']}` from `{m.get('input')}` (sha256 `{m.get('input_sha256')}`)",
                  f"- rows: {m.get('rows_in')} kept traces in, {m.get('rows_out')} exported; tasks {m.get('tasks')}",
                  f"- teacher models: {teacher.get('models')}; modes: {teacher.get('modes')}", "",
                  "| prompt id | prompt sha256 | rows |", "|---|---|---|"]  # fmt: skip
        for pid, shas in (teacher.get("prompts") or {}).items():
            lines += [f"| {pid} | `{sha}` | {n} |" for sha, n in shas.items()]
        rates = lineage["filter_keep_rates"]
        lines += ["", f"- filter summary: `{m.get('filter_summary_path')}`" if m.get("filter_summary_path")
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


def write_lineage(output_dir: str, lineage: dict) -> None:
    write_json_atomic(Path(output_dir) / "lineage.json", lineage)
    write_text_atomic(Path(output_dir) / "README.md", model_card(lineage))
