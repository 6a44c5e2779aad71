"""The filter report: `report.md` and PNG plots (matplotlib, Agg) next to the filter's outputs, and the figures that go
into the filter's summary (`kept.summary.json`, written by `distill.filter`):
rows in / kept / rejected / unreadable lines, rejections by check (every reason counted), keep rate
per check (share of rows that check alone would keep), per task and per dataset, per-score value ranges.
Plots (plots/): score histograms (kept vs rejected, thresholds marked) and keep rates per check, task and dataset.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path

from distill.extras import install_hint
from distill.io import write_text_atomic

log = logging.getLogger(__name__)


def check_of(reason: str) -> str:
    """The check a reason belongs to: 'length: 12 < min 20' -> 'length'."""
    return reason.split(":", 1)[0]


def numeric_paths(rows: list[dict]) -> dict[str, list[tuple[float, int]]]:
    """Score path -> [(value, row index)] for every numeric score leaf (dicts one level deep: 'name.key')."""
    out: dict[str, list] = defaultdict(list)
    for i, row in enumerate(rows):
        for name, value in (row.get("scores") or {}).items():
            leaves = value.items() if isinstance(value, dict) else [(None, value)]
            for key, v in leaves:
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[name if key is None else f"{name}.{key}"].append((float(v), i))
    return dict(out)


def _rate_table(rows, reasons, key) -> dict:
    total, kept = Counter(), Counter()
    for row, why in zip(rows, reasons, strict=False):
        total[key(row)] += 1
        kept[key(row)] += not why
    return {k: {"rows": total[k], "kept": kept[k], "keep_rate": round(kept[k] / total[k], 4)} for k in sorted(total)}


def _plots(out: Path, paths: dict, reasons, config, per_check, per_task, per_dataset) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = []
    # Thresholded scores first, then the rest; cluster ids are labels, not magnitudes.
    dedup_score = config.dedup.score if config.dedup else "near_duplicate"
    names = [p for p in config.thresholds if p in paths] + [p for p in paths if p not in config.thresholds]
    names = [p for p in names if p != dedup_score][:12]
    if names:
        cols = min(3, len(names))
        nrows = (len(names) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            kept = [v for v, i in paths[name] if not reasons[i]]
            rej = [v for v, i in paths[name] if reasons[i]]
            ax.hist([kept, rej], bins=20, stacked=True, color=["#2a9d8f", "#e76f51"], label=["kept", "rejected"])
            for bound in ("min", "max"):
                rule = config.thresholds.get(name)
                if rule is not None and (t := getattr(rule, bound)) is not None:
                    ax.axvline(t, color="black", linestyle="--", linewidth=1)
            ax.set_title(name, fontsize=10)
            ax.set_ylabel("rows")
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8)
        fig.suptitle("score histograms (dashed: thresholds)")
        fig.tight_layout()
        fig.savefig(out / "score_histograms.png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        files.append("score_histograms.png")
    for title, table, fname in (
        ("share of all rows each check let through", {k: v["keep_rate"] for k, v in per_check.items()}, "keep_rate_by_check.png"),
        ("keep rate per task", {k: v["keep_rate"] for k, v in per_task.items()}, "keep_rate_by_task.png"),
        ("keep rate per dataset", {k: v["keep_rate"] for k, v in per_dataset.items()}, "keep_rate_by_dataset.png"),
    ):  # fmt: skip
        if not table:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.2))
        labels = list(table)
        ax.barh(labels, [table[k] for k in labels], color="#264653")
        for y, k in enumerate(labels):  # label inside the bar (white) when the bar reaches the right edge
            inside = table[k] > 0.85
            x = table[k] - 0.01 if inside else table[k] + 0.01
            ax.text(x, y, f"{table[k]:.0%}", va="center", ha="right" if inside else "left", fontsize=9,
                    color="white" if inside else "black")  # fmt: skip
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=100, metadata={"Software": None})
        plt.close(fig)
        files.append(fname)
    return files


def _snippet(row: dict, n: int = 220) -> str:
    final = ((row.get("trace") or {}).get("final") or (row.get("error") or "")).replace("\n", " ").replace("|", "/")
    return final[:n] + ("…" if len(final) > n else "")


def write_report(out_dir, rows, reasons, config, bad_lines, seconds: float) -> dict:
    """Write report.md and plots/ into `out_dir`; returns the figures for the filter's summary."""
    out_dir = Path(out_dir)
    n, n_kept = len(rows), sum(not r for r in reasons)
    by_check = Counter(check_of(x) for why in reasons for x in why)
    checks = (["status"] if config.reject_status else []) + list(config.thresholds)
    checks += [config.dedup.score] if config.dedup else []
    checks += ["best_of_n"] if config.best_of_n else []
    per_check = {c: {"rejected": by_check[c], "keep_rate": round(1 - by_check[c] / n, 4) if n else 0.0} for c in checks}
    per_task = _rate_table(rows, reasons, lambda r: str(r.get("task")))
    per_dataset = _rate_table(rows, reasons, lambda r: str(r.get("dataset")))
    paths = numeric_paths(rows)
    ranges = {p: {"min": min(v for v, _ in vs), "max": max(v for v, _ in vs), "mean": round(sum(v for v, _ in vs) / len(vs), 6), "n": len(vs)}
              for p, vs in paths.items()}  # fmt: skip
    try:
        plots = _plots(out_dir / "plots", paths, reasons, config, per_check, per_task, per_dataset)
        no_plots = None
    except ModuleNotFoundError as e:  # a base install (no `eval` extra): the filter's outputs matter, not its plots
        if (no_plots := install_hint(e.name or "")) is None:
            raise
        log.warning("filter report without plots: %s", no_plots)
        plots = []
    summary = {
        "input": config.input, "kept_file": config.kept, "rejected_file": config.rejected,
        "rows_in": n, "kept": n_kept, "rejected": n - n_kept, "keep_rate": round(n_kept / n, 4) if n else 0.0,
        "unreadable_lines": bad_lines, "rejections_by_check": dict(by_check.most_common()),
        "keep_rate_by_check": per_check, "by_task": per_task, "by_dataset": per_dataset, "score_ranges": ranges,
        "plots": [f"plots/{p}" for p in plots], "seconds": round(seconds, 3),
    }  # fmt: skip

    md = [f"# Filter report: `{config.input}`", "",
          f"{n} rows in, **{n_kept} kept** ({summary['keep_rate']:.1%}), {n - n_kept} rejected"
          + (f", {len(bad_lines)} unreadable line(s) not passed on" if bad_lines else "") + ".", "",
          "## Rejections by check", "", "A row can fail several checks; each is counted. Per-row checks see every row; dedup and best_of_n only "
          "compare rows that passed them.", "",
          "| check | rows rejected | share of all rows it let through |", "|---|---:|---:|"]  # fmt: skip
    md += [f"| {c} | {v['rejected']} | {v['keep_rate']:.1%} |" for c, v in per_check.items()]
    for title, table in (("task", per_task), ("dataset", per_dataset)):
        md += ["", f"## Per {title}", "", f"| {title} | rows | kept | keep rate |", "|---|---:|---:|---:|"]
        md += [f"| {k} | {v['rows']} | {v['kept']} | {v['keep_rate']:.1%} |" for k, v in table.items()]
    md += ["", "## Plots", ""] + ([f"![{p}](plots/{p})" for p in plots] if not no_plots else [f"No plots: {no_plots}."])
    k = config.report_examples
    kept_rows = [r for r, why in zip(rows, reasons, strict=False) if not why][:k]
    rej_rows, shown = [], set()
    for check in by_check:  # up to k examples per check, so every kind of rejection is illustrated
        picked = [i for i, why in enumerate(reasons) if i not in shown and any(check_of(x) == check for x in why)][:k]
        shown.update(picked)
        rej_rows += [(rows[i], reasons[i]) for i in picked]
    md += ["", "## Examples kept", "", "| id | task | final |", "|---|---|---|"]
    md += [f"| {r.get('id')}#{r.get('sample_index', 0)} | {r.get('task')} | {_snippet(r)} |" for r in kept_rows]
    md += [
        "",
        f"## Examples rejected (up to {k} per check)",
        "",
        "| id | task | rejected by | final |",
        "|---|---|---|---|",
    ]
    md += [f"| {r.get('id')}#{r.get('sample_index', 0)} | {r.get('task')} | {'; '.join(why)} | {_snippet(r)} |"
           for r, why in rej_rows]  # fmt: skip
    write_text_atomic(out_dir / "report.md", "\n".join(md) + "\n")
    return summary
