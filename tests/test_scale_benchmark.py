"""benchmarks/scale.py runs end to end on a few rows (the real figures come from `--rows 100000 ...`).

pytest -q tests/test_scale_benchmark.py
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_scale_benchmark_tiny(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/scale.py"), "--rows", "60", "--stages", "score",
                           "filter", "merge", "--workdir", str(tmp_path / "w"), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert [r["stage"] for r in results] == ["score", "filter", "merge"]
    assert all(r["rc"] == 0 and r["peak_rss_mb"] > 0 and r["cpu_s"] > 0 for r in results)
    assert "| score | 60 |" in proc.stdout
    merged = (tmp_path / "w/rows60/merge/traces.jsonl").read_text().splitlines()
    assert len(merged) == 60  # the two shards hold every trace row once
