"""`distill eval`'s results in the files other tools read: MMEB's own score files and a TREC run per condition.

    sink = MMEBFiles("runs/x/eval", depth=100)
    retrieval(rows, traces, embedder, sink=sink); sink.close()

- `mmeb_scores/<condition>/<modality>/<Dataset>_score.json`: VLM2Vec-V2's eval.py layout and keys (`hit@1`, `hit@5`,
  `hit@10`, `ndcg_linear@1`, `ndcg_linear@5`, `ndcg_linear@10`, `num_pred`, `num_data`), so MMEB's leaderboard script
  (experiments/report_score_v2.py: `<modality>/<Dataset>_score.json`, `hit@1` for image and video, `ndcg_linear@5` for
  visdoc) reads a condition's folder as a model's results. `num_pred`: queries ranked; `num_data`: eval rows (rows no
  candidate of which this embedder can tell apart are not ranked: `indistinguishable` in eval.json).
- `trec/<condition>.run` (`qid Q0 docno rank score run`, the top `depth` candidates per query) and `trec/qrels.txt`:
  trec_eval, ranx and ir-measures read them (trec_eval skips a query without any relevant candidate, which eval.json
  scores 0); qid = the eval row's id, docno = the candidate's name under the tie policy
  (`distill.eval.retrieval.doc_id`), so trec_eval's own tie order (docno descending) reproduces the policy. Scores are
  written at full precision: rounding would make ties that the ranking did not have.
Every file is written atomically (runs as one file each when `close()` is called).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from distill.eval.retrieval import ALL_MEASURES
from distill.io import write_json_atomic, write_text_atomic


class MMEBFiles:
    """The sink `retrieval` calls per dataset and condition; holds the open run files (hence a class)."""

    def __init__(self, out_dir: str | Path, depth: int = 100):
        self.out, self.depth = Path(out_dir), depth
        self._runs: dict[str, object] = {}  # condition -> open temporary run file
        self._qids: dict[tuple, str] = {}  # (dataset, query index) -> qid, unique over the whole run
        self._used: set[str] = set()
        self._qrels: list[str] = []
        self._qrels_condition: str | None = None  # judgements are the same for every condition: taken from the first
        self.score_files: list[str] = []

    def _qid(self, dataset: str, index: str, row_id: str) -> str:
        key = (dataset, index)
        if key not in self._qids:
            qid, n = "".join(row_id.split()) or f"{dataset}-{index}", 1
            while qid in self._used:  # identical rows share an id: keep every query
                n += 1
                qid = f"{row_id}#{n}"
            self._used.add(qid)
            self._qids[key] = qid
        return self._qids[key]

    def __call__(self, entry: dict, condition: str, run: dict, qrels: dict, values: dict, ids: dict) -> None:
        ds = entry["dataset"]
        score = {k: float(np.mean(list(values[k].values()))) for k in ALL_MEASURES}
        score |= {"num_pred": len(run), "num_data": entry["rows"]}
        path = self.out / "mmeb_scores" / condition / entry["modality"] / f"{ds}_score.json"
        write_json_atomic(path, score)
        self.score_files.append(str(path.relative_to(self.out)))
        if not self.depth:
            return
        first = condition not in self._runs
        if first:
            (self.out / "trec").mkdir(parents=True, exist_ok=True)
            self._runs[condition] = open(self.out / "trec" / f".{condition}.run.tmp", "w")
        f = self._runs[condition]
        for index, docs in run.items():
            qid = self._qid(ds, index, ids[index])
            ranked = sorted(sorted(docs.items(), reverse=True), key=lambda kv: -kv[1])  # trec_eval's order
            f.writelines(f"{qid} Q0 {doc} {r} {score!r} {condition}\n" for r, (doc, score) in
                         enumerate(ranked[: self.depth], 1))  # fmt: skip
            if self._qrels_condition in (None, condition):
                self._qrels_condition = condition
                self._qrels += [f"{qid} 0 {doc} {rel}\n" for doc, rel in qrels[index].items() if rel > 0]

    def close(self) -> list[str]:
        """Move the run files into place and write the qrels; returns every file written, relative to out_dir."""
        files = list(self.score_files)
        for condition, f in self._runs.items():
            f.close()
            os.replace(self.out / "trec" / f".{condition}.run.tmp", self.out / "trec" / f"{condition}.run")
            files.append(f"trec/{condition}.run")
        if self._runs:
            write_text_atomic(self.out / "trec" / "qrels.txt", "".join(self._qrels))
            files.append("trec/qrels.txt")
        self._runs = {}
        return files
