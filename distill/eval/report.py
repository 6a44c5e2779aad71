"""The eval report: report.md (tables) and plots/*.png (matplotlib, Agg) from the figures `distill eval` computed.

Plots: retrieval_by_dataset.png (per-dataset bars by condition, plus the overall mean), quality_by_set.png (format,
truncation, accuracy and agreement per trace set), quality_by_dataset.png (format rate and accuracy per dataset).
"""

from __future__ import annotations

from pathlib import Path

from distill.io import write_text_atomic

COLOURS = ["#8d99ae", "#264653", "#e9c46a", "#2a9d8f", "#e76f51", "#6d597a", "#b5838d"]


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _num(x) -> str:
    return "–" if x is None else f"{x:g}"


def _colour(name: str, sets: list[str]) -> str:
    """One colour per set in every plot; the query-alone condition is grey."""
    return COLOURS[0] if name not in sets else COLOURS[1 + sets.index(name) % (len(COLOURS) - 1)]


def _bars(ax, groups: list[str], series: dict[str, list], title: str, sets: list[str]) -> None:
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        xs = [g + (k - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [100 * (v or 0) for v in values], width, label=name, color=_colour(name, sets))
        for x, v in zip(xs, values, strict=True):
            if v is None:
                ax.text(x, 1, "n/a", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars reach 100%


def _plots(out: Path, result: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = []
    quality = result["quality"]
    metrics = {
        "format": "format_rate",
        "truncated": "truncation_rate",
        "accuracy": "accuracy",
        "agreement": "agreement",
    }
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _bars(ax, list(metrics), {n: [q["all"][m] for m in metrics.values()] for n, q in quality.items()},
          "trace quality per set (%)", list(quality))  # fmt: skip
    fig.tight_layout()
    fig.savefig(out / "quality_by_set.png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    files.append("quality_by_set.png")
    datasets = sorted({d for q in quality.values() for d in q["by_dataset"]})
    answered = [
        d for d in datasets if any((q["by_dataset"].get(d) or {}).get("accuracy_rows") for q in quality.values())
    ]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * (len(datasets) + len(answered)) + 3), 3.8))
    for ax, (label, key, names) in zip(axes, (("format rate", "format_rate", datasets),
                                              ("answer accuracy", "accuracy", answered)), strict=True):  # fmt: skip
        series = {n: [(q["by_dataset"].get(d) or {}).get(key) for d in names] for n, q in quality.items()}
        _bars(ax, names, series, f"{label} per dataset (%)", list(quality))
    fig.tight_layout()
    fig.savefig(out / "quality_by_dataset.png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    files.append("quality_by_dataset.png")
    ret = result.get("retrieval")
    if ret:
        names = list(ret["datasets"]) + ["overall"]
        series = {c: [d["scores"][c] for d in ret["datasets"].values()] + [ret["overall"]["scores"][c]]
                  for c in ret["conditions"]}  # fmt: skip
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 4))
        _bars(ax, [f"{n}\n({ret['datasets'][n]['metric']})" if n in ret["datasets"] else n for n in names], series,
              f"retrieval by dataset and condition (%; embedder {ret['embedder']['model']})", list(quality))  # fmt: skip
        fig.tight_layout()
        fig.savefig(out / "retrieval_by_dataset.png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        files.append("retrieval_by_dataset.png")
    return files


def _quality_md(quality: dict, reference: str) -> list[str]:
    unit = next(iter(quality.values()))["length_unit"]
    head = (f"| {{}} | set | rows | format % | truncated % | failed % | length, mean ({unit}) | accuracy % (n) | "
            f"agreement with {reference} % (n) |")  # fmt: skip
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|"

    def line(group: str, name: str, s: dict) -> str:
        acc = f"{_pct(s['accuracy'])} ({s['accuracy_rows']})" if s["accuracy_rows"] else "–"
        agr = f"{_pct(s['agreement'])} ({s['agreement_ids']})" if s["agreement_ids"] else "–"
        return (f"| {group} | {name} | {s['rows']} | {_pct(s['format_rate'])} | {_pct(s['truncation_rate'])} | "
                f"{_pct(s['failed_rate'])} | {_num(s['length_mean'])} | {acc} | {agr} |")  # fmt: skip

    md = ["## Trace quality", "",
          "Rates are over every row of a set (failed rows count as neither well formed nor correct); accuracy: "
          "final answer vs the gold answer (vqa, classification); agreement: the set's answer equals "
          f"{reference}'s on the same id (one trace per id, lowest sample_index).", "",
          head.format("all"), rule]  # fmt: skip
    md += [line("all", n, q["all"]) for n, q in quality.items()]
    for kind in ("by_task", "by_dataset"):
        keys = sorted({k for q in quality.values() for k in q[kind]})
        md += ["", f"### Per {kind[3:]}", "", head.format(kind[3:]), rule]
        md += [line(k, n, q[kind][k]) for k in keys for n, q in quality.items() if k in q[kind]]
    writers = "; ".join(f"{n}: " + ", ".join(f"{m} ({c})" for m, c in q["writers"].items()) for n, q in quality.items())
    return md + ["", f"Writers (`teacher.model` of the rows): {writers}."]


def _retrieval_md(ret: dict, several: bool = False) -> list[str]:
    conds = ret["conditions"]
    name = ret["embedder"].get("name")
    md = [f"## Retrieval, embedder {name}" if several else "## Retrieval", "",
          f"Embedder: {ret['embedder']['kind']} `{ret['embedder']['model']}`; query + trace part `{ret['trace_part']}`; "
          f"{ret['eval_rows']} eval rows. Scores in %, computed by ir-measures (pytrec_eval): Hit@1 for image and video "
          f"tasks, NDCG@5 for visual documents. Ties: {ret['tie_policy']}.", "",
          "| dataset | task | metric | queries | " + " | ".join(conds) + " |",
          "|---|---|---|---:|" + "---:|" * len(conds)]  # fmt: skip
    for name, d in ret["datasets"].items():
        md.append(f"| {name} | {d['task']} | {d['metric']} | {d['queries']} | "
                  + " | ".join(_pct(d["scores"][c]) for c in conds) + " |")  # fmt: skip
    for kind, label in (("by_task", "task"), ("by_modality", "modality")):
        for key, g in ret[kind].items():
            md.append(f"| *mean, {label} {key}* | | | {g['datasets']} datasets | "
                      + " | ".join(_pct(g["scores"][c]) for c in conds) + " |")  # fmt: skip
    g = ret["overall"]
    md.append(f"| **overall** | | | {g['datasets']} datasets | "
              + " | ".join(f"**{_pct(g['scores'][c])}**" for c in conds) + " |")  # fmt: skip
    if ret.get("eval_rows_left_out"):
        md += ["", f"{ret['eval_rows_left_out']} eval row(s) left out: some trace set has no trace for them "
               "(--on_missing intersect)."]  # fmt: skip
    skipped = {n: d["indistinguishable"] for n, d in ret["datasets"].items() if d["indistinguishable"]}
    if skipped:
        md += ["", "Rows left out because every candidate is the same item for this embedder (e.g. image-only "
               "candidates under a text embedder): " + ", ".join(f"{n} {k}" for n, k in skipped.items()) + "."]  # fmt: skip
    used = sum(d.get("target_traces_used", 0) for d in ret["datasets"].values())
    if any(c.endswith("+targets") for c in conds):
        md += ["", f"`+targets` columns: every candidate with a target-side trace is conditioned by it, positives and "
               f"negatives alike ({used} candidate(s) over the ranked queries)."]  # fmt: skip
    sets = [c for c in conds[1:] if not c.endswith("+targets")]
    empty = {n: sum(d["no_trace_used"][n] for d in ret["datasets"].values()) for n in sets}
    empty = {n: c for n, c in empty.items() if c}
    if empty:
        md += ["", "Queries embedded alone because the set has no usable trace for them (failed rows): "
               + ", ".join(f"{n} {c}" for n, c in empty.items()) + "."]  # fmt: skip
    return md


def _tte_md(result: dict) -> list[str]:
    """Every embedder x every condition, overall (the table TTE's comparison is read from), and the headline."""
    by_embedder, h = result["retrieval_by_embedder"], result.get("tte")
    conds = next(iter(by_embedder.values()))["conditions"]
    md = ["## Retrieval by embedder and trace (Think-Then-Embed)", "",
          "Overall retrieval (mean over datasets; Hit@1 / NDCG@5 %) of each embedder, reading the query alone "
          "(`no_trace`) or the query with each set's trace. Per-dataset tables per embedder below.", "",
          "| embedder | model | " + " | ".join(conds) + " |", "|---|---|" + "---:|" * len(conds)]  # fmt: skip
    for name, ret in by_embedder.items():
        scores = ret["overall"]["scores"]
        md.append(f"| {name} | `{ret['embedder']['model']}` | " + " | ".join(_pct(scores[c]) for c in conds) + " |")
    if h:
        share = "–" if h["share"] is None else f"{100 * h['share']:.0f}%"
        md += ["", f"**Baseline** ({h['baseline_embedder']}, no trace) {_pct(h['baseline'])} · **TTE_t** "
               f"({h['tte_embedder']} + {h['teacher_set']}'s traces) {_pct(h['tte_t'])} · **TTE_s** "
               f"({h['tte_embedder']} + {h['student_set']}'s traces) {_pct(h['tte_s'])}: the student keeps {share} "
               "of the teacher's gain over the baseline."]  # fmt: skip
    return md + [""]


def _headline_md(result: dict) -> list[str]:
    """One row per set: the figures that answer "did it work?", retrieval as the overall mean and its gain over the
    query alone (percentage points)."""
    ret = result.get("retrieval")
    md = ["## Headline", "",
          "| set | rows | format % | truncated % | accuracy % | agreement % |"
          + (f" retrieval overall %{_by(ret, result)} | vs no_trace (pts) |" if ret else ""),
          "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if ret else "")]  # fmt: skip
    base = ret["overall"]["scores"].get("no_trace") if ret else None
    if ret:
        md.append(f"| no_trace (query alone) | | | | | | {_pct(base)} | |")
    for name, q in result["quality"].items():
        a = q["all"]
        line = (f"| {name} | {a['rows']} | {_pct(a['format_rate'])} | {_pct(a['truncation_rate'])} | "
                f"{_pct(a['accuracy'])} | {_pct(a['agreement'])} |")  # fmt: skip
        if ret:
            score = ret["overall"]["scores"].get(name)
            gain = f"{100 * (score - base):+.1f}" if score is not None and base is not None else "–"
            line += f" {_pct(score)} | {gain} |"
        md.append(line)
    return md + [""]


def _by(ret: dict, result: dict) -> str:
    """ " (embedder NAME)" when several embedders were ranked, so a column says whose figures it holds."""
    return f" ({ret['embedder']['name']})" if len(result.get("retrieval_by_embedder") or {}) > 1 else ""


def summary_lines(result: dict) -> list[str]:
    """A few lines for the terminal: headline quality per set and overall retrieval per condition."""
    q = result["quality"]
    width = max(len(n) for n in q) + 2
    lines = [f"{'set':{width}s}{'rows':>6s}{'format%':>9s}{'trunc%':>8s}{'acc%':>7s}{'agree%':>8s}"]
    for name, entry in q.items():
        a = entry["all"]
        lines.append(f"{name:{width}s}{a['rows']:>6d}{_pct(a['format_rate']):>9s}{_pct(a['truncation_rate']):>8s}"
                     f"{_pct(a['accuracy']):>7s}{_pct(a['agreement']):>8s}")  # fmt: skip
    for ret in (result.get("retrieval_by_embedder") or {}).values() or filter(None, [result.get("retrieval")]):
        o = ret["overall"]
        scores = " | ".join(f"{c} {_pct(o['scores'][c])}" for c in ret["conditions"])
        lines.append(f"retrieval{_by(ret, result)}, mean over {o['datasets']} dataset(s) (Hit@1 / NDCG@5 %): {scores}")
    h = result.get("tte")
    if h:
        lines.append(f"TTE: baseline {_pct(h['baseline'])} | TTE_t {_pct(h['tte_t'])} | TTE_s {_pct(h['tte_s'])}")
    return lines


def write_report(out_dir, result: dict, title: str) -> list[str]:
    """Write report.md and plots/ into `out_dir`; returns the plot paths relative to it."""
    out_dir = Path(out_dir)
    plots = [f"plots/{p}" for p in _plots(out_dir / "plots", result)]
    sets = ", ".join(f"**{n}** `{p}`" for n, p in result["trace_sets"].items())
    md = [f"# {title}", "", f"Trace sets: {sets}.", ""]
    left = {n: k for n, k in result["ids_left_out"].items() if k}
    if left:
        md += [f"Ids not shared by every set, left out (--on_missing intersect): {left}.", ""]
    by_embedder = result.get("retrieval_by_embedder") or {}
    if len(by_embedder) > 1:
        md += _tte_md(result)
    md += _headline_md(result)
    md += _quality_md(result["quality"], result["reference"])
    for ret in by_embedder.values() or filter(None, [result.get("retrieval")]):
        md += [""] + _retrieval_md(ret, several=len(by_embedder) > 1)
    md += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    write_text_atomic(out_dir / "report.md", "\n".join(md) + "\n")
    return plots
