"""Lineage and model card of a trained embedder: base model, the trace set that conditioned it and who wrote it
(teacher model / student checkpoint, from the trace rows' `teacher`), the traces' filter summary, loss, τ, batch and
steps. `distill embed` writes `<output_dir>/lineage.json` and the card `<output_dir>/README.md` (replacing the one
sentence-transformers generates: ours says what the inputs must look like). Local paths appear only as their last
component (`distill.lineage.public`), so both can be published.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.io import write_json_atomic, write_text_atomic
from distill.lineage import _rates, is_hub_id, public

TAGS = ["distill", "think-then-embed", "sentence-transformers", "embeddings", "contrastive"]


def filter_summary_of(trace_path: str) -> dict | None:
    """The `distill filter` summary written beside a kept-traces file (`kept.summary.json`), if there is one."""
    from distill.stage import contract_paths

    path = contract_paths(trace_path)[1]
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("stage") == "filter" else None


def build_lineage(config: dict, traces, pair_stats: dict, result: dict | None) -> dict:
    """The lineage record. `traces`: the conditioning `distill.embed.pairs.TraceSet`, or None (baseline)."""
    filt = filter_summary_of(traces.path) if traces is not None else None
    config = {**config, "traces": {k: Path(v).name for k, v in (config.get("traces") or {}).items()}}  # no local paths
    return public({
        "base_model": config.get("base_model") or config.get("model_name_or_path"),
        "adapter": bool(config.get("use_peft")),
        "input": config.get("input"),
        "trace_condition": config.get("trace_condition"),
        "traces": None if traces is None else {"name": traces.name, "trace_file": Path(traces.path).name, "rows": traces.rows,
                                               "written_by": traces.writers, "part": config.get("trace_part"),
                                               "dropout": config.get("trace_dropout")},
        "trace_filter": None if filt is None else {"rows_in": filt.get("rows_in"), "rows_out": filt.get("rows_out"),
                                                  "dropped": filt.get("dropped"), "keep_rates": _rates(filt)},
        "loss": {"name": config.get("loss"), "temperature": config.get("temperature"),
                 "scale": 1.0 / float(config.get("temperature") or 0.02), "mini_batch_size": config.get("mini_batch_size"),
                 "num_negatives": config.get("num_negatives")},
        "pairs": pair_stats,
        "result": result,
        "config": config,
    })  # fmt: skip


def model_card(lineage: dict) -> str:
    """The card: YAML front matter (huggingface_hub.ModelCardData) and a body saying how the model was made and used."""
    from huggingface_hub import ModelCardData

    cfg, res, tr = lineage["config"], lineage.get("result") or {}, lineage.get("traces")
    base = lineage.get("base_model")
    data = ModelCardData(base_model=base if is_hub_id(base) else None, pipeline_tag="sentence-similarity",
                         library_name="sentence-transformers", tags=TAGS + (["lora"] if lineage["adapter"] else []),
                         license=cfg.get("license"))  # fmt: skip
    name = cfg.get("hub_model_id") or Path(cfg.get("output_dir") or "embedder").name
    conditioned = (
        f"conditioned on the `{tr['name']}` traces ({tr['part']} part appended to the query; target-side "
        f"traces to the positive), {tr['dropout']:.0%} of pairs without them"  # fmt: skip
        if tr
        else "without traces (the baseline embedder)"
    )
    lines = ["---", data.to_yaml(), "---", "", f"# {name}", "",
             f"A trace-conditioned embedder (Think-Then-Embed, arXiv 2510.05014) trained with `distill embed` from "
             f"`{base}`, {conditioned}.", "",
             "## Use", "", "```python", "from sentence_transformers import SentenceTransformer", "",
             'model = SentenceTransformer("<this repo or folder>")',
             "# query: instruction + query text, then a newline and the reasoner's trace (<think>…</think> + final)",
             'q = model.encode(["Represent the given image with the following question: ...\\n<think>…</think>\\n…"])',
             "```", "",
             "Build the text exactly as `distill.embed_text` does (the functions `distill eval` uses); a VLM backbone "
             "reads a chat message with the images first.", "", "## Traces", ""]  # fmt: skip
    if tr:
        lines += [f"- set `{tr['name']}` from `{tr['trace_file']}`: {tr['rows']} rows",
                  *[f"- written by {who}: {n} rows" for who, n in (tr.get("written_by") or {}).items()]]  # fmt: skip
        filt = lineage.get("trace_filter")
        lines += [f"- filter: {filt['rows_in']} traces in, {filt['rows_out']} kept; dropped {filt['dropped']}"
                  if filt else "- filter summary: none found beside the trace file"]  # fmt: skip
    else:
        lines += ["- none: the query and the candidates alone"]
    loss = lineage["loss"]
    lines += ["", "## Training", "",
              f"- loss: {loss['name']} (InfoNCE, query→target, temperature {loss['temperature']} = scale "
              f"{loss['scale']:g}); hard negatives per pair: at most {loss['num_negatives']} "
              f"({lineage['pairs'].get('hard_negatives', 0)} from the data, "
              f"{lineage['pairs'].get('negatives_topped_up', 0)} topped up)"
              + (f"; GradCache mini-batches of {loss['mini_batch_size']}" if "Cached" in str(loss["name"]) else ""),
              f"- pairs: {lineage['pairs'].get('pairs')} over datasets {sorted(lineage['pairs'].get('datasets') or {})}",
              f"- {res.get('global_batch') or 'global batch: not recorded'}; steps {res.get('global_step')}; "
              f"lr {cfg.get('learning_rate')}; LoRA: {cfg.get('use_peft')}",
              f"- result: {json.dumps({k: v for k, v in res.items() if k not in ('losses', 'global_batch')})}", "",
              "## Lineage", "", "```json", json.dumps({k: v for k, v in lineage.items() if k != "config"}, indent=2),
              "```", ""]  # fmt: skip
    return "\n".join(lines)


def write_card(output_dir: str, lineage: dict) -> None:
    write_json_atomic(Path(output_dir) / "lineage.json", lineage)
    write_text_atomic(Path(output_dir) / "README.md", model_card(lineage))
