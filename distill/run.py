"""`distill run`: the whole chain (generate -> score -> filter -> export -> train) from one pipeline recipe.

    distill run --config recipes/demo/pipeline.yaml

Each stage runs as its own `distill <verb>` subprocess (training keeps global accelerate/DeepSpeed state) with a stage
config written to `runs/<name>/<stage>/stage_config.yaml`: the stage's recipe, the pipeline's overrides, and the paths that
wire it to the previous stage. A stage is skipped when it finished before with the same fingerprint (sha256 of its
config and of its input files), so a crashed run resumes where it stopped; `generate` itself resumes request by request
from its journal. When the recipe has a `serve` section, a local teacher (`distill serve`) is started on a free
loopback port for the stages that need it and stopped afterwards. Writes `runs/<name>/run_summary.json` and
`runs/<name>/report.md` linking each stage's own report.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import yaml

from distill.io import write_json_atomic, write_text_atomic
from distill.pipeline_stages import STAGES, StageSpec, stage_summary

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    name: str = field(default="demo", metadata={"help": "Run name; outputs go to <runs_root>/<name>/<stage>/."})
    runs_root: str = field(default="runs", metadata={"help": "Directory holding run directories."})
    stages: list[str] = field(
        default_factory=lambda: [s.name for s in STAGES],
        metadata={"help": "Stages to run, in pipeline order (a subset runs only those; earlier outputs must exist)."},
    )
    force: list[str] = field(default_factory=list, metadata={"help": "Stages to rerun even when up to date."})
    tiny_vlm: str | None = field(
        default=None, metadata={"help": "Demo only: build the kit's tiny random VLM at this path if it is missing."}
    )
    serve: dict | None = field(
        default=None,
        metadata={"help": "Start a local teacher: {models: [name=PATH | smollm2 ...], args: [extra serve flags]}."},
    )
    generate: dict | None = field(default=None, metadata={"help": "{recipe: generate.yaml, <overrides>}"})
    score: dict | None = field(default=None, metadata={"help": "{recipe: score.yaml, <overrides>}"})
    filter: dict | None = field(default=None, metadata={"help": "{recipe: filter.yaml, <overrides>}"})
    export: dict | None = field(default=None, metadata={"help": "{recipe: export.yaml (optional), <overrides>}"})
    train: dict | None = field(default=None, metadata={"help": "{recipe: train.yaml, <overrides>}"})
    train_launcher: list[str] | None = field(
        default=None,
        metadata={
            "help": "Command prefix for multi-GPU training, e.g. [accelerate, launch, --config_file, "
            "recipes/accelerate/zero2_offload.yaml]; None: one `python -m distill train` process."
        },
    )

    def __post_init__(self):
        known = [s.name for s in STAGES]
        for name in [*self.stages, *self.force]:
            if name not in known:
                raise ValueError(f"unknown stage {name!r} (stages: {', '.join(known)})")
        self.stages = [s for s in known if s in self.stages]  # pipeline order, whatever order was given

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_root) / self.name


# Files above this size are fingerprinted by (size, mtime) instead of content: checkpoints and big datasets would
# otherwise be read in full on every resume.
CONTENT_HASH_MAX_BYTES = 64 * 2**20


def _hash_path(h, path: Path) -> None:
    """Feed a file's or a directory's content (names + bytes, sorted) into `h`; a missing path hashes as missing."""
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            _hash_path(h, f)
    elif path.is_file():
        st = path.stat()
        if st.st_size > CONTENT_HASH_MAX_BYTES:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            return
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(b"<missing>")


def fingerprint(config_text: str, inputs: list[Path]) -> str:
    h = hashlib.sha256(config_text.encode())
    for p in inputs:
        h.update(str(p).encode())
        _hash_path(h, p)
    return h.hexdigest()


def stage_config(spec: StageSpec, section: dict | None, run_dir: Path, teacher_url: str | None) -> dict:
    """The stage's recipe + the pipeline's overrides + wired paths (wired paths win: they define the run layout)."""
    section = dict(section or {})
    recipe = section.pop("recipe", None)
    merged = yaml.safe_load(Path(recipe).read_text()) if recipe else {}
    merged = dict(merged or {})
    merged.update(section)
    merged.update(spec.wire(run_dir))
    if teacher_url and spec.teacher_field:
        merged[spec.teacher_field] = teacher_url
    return merged


def _run_teed(cmd: list[str], log_path: Path) -> int:
    """Run `cmd`, copying its output (progress bars included, unbuffered) to our stdout and to `log_path`."""
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            while chunk := proc.stdout.read1(1 << 14):
                log_file.write(chunk)
                log_file.flush()
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        except BaseException:
            proc.kill()
            raise
        return proc.wait()


def run_stage(spec: StageSpec, config: dict, run_dir: Path, launcher: list[str] | None = None) -> dict:
    """Run one stage as a subprocess (under `launcher`, e.g. accelerate launch, when given), logging to
    <stage>/stage.log; returns its summary. Raises on failure."""
    stage_dir = run_dir / spec.name
    stage_dir.mkdir(parents=True, exist_ok=True)
    config_path = stage_dir / "stage_config.yaml"
    write_text_atomic(config_path, yaml.safe_dump(config, sort_keys=False))
    prefix = [*launcher, "-m"] if launcher else [sys.executable, "-m"]
    cmd = [*prefix, "distill", spec.verb, "--config", str(config_path)]
    log.info("stage %s: %s", spec.name, " ".join(cmd))
    start = time.time()
    returncode = _run_teed(cmd, stage_dir / "stage.log")
    seconds = time.time() - start
    if returncode != 0:
        raise RuntimeError(f"stage {spec.name} failed (exit {returncode}); see {stage_dir / 'stage.log'}")
    return {**stage_summary(spec, run_dir), "seconds": round(seconds, 2)}


def report_markdown(cfg: RunConfig, summaries: dict[str, dict]) -> str:
    lines = [f"# Run `{cfg.name}`", "", "| stage | status | rows in | rows out | seconds | tokens | report |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for spec in STAGES:
        s = summaries.get(spec.name)
        if s is None:
            continue
        link = f"[{spec.report}]({spec.name}/{spec.report})" if spec.report else ""
        lines.append(f"| {spec.name} | {s['status']} | {s.get('rows_in', '')} | {s.get('rows_out', '')} | "
                     f"{s.get('seconds', '')} | {s.get('tokens', '')} | {link} |")  # fmt: skip
    lines += ["", "Each stage directory holds the config it ran with (`stage_config.yaml`) and its log (`stage.log`)."]
    return "\n".join(lines) + "\n"


def main(cfg: RunConfig) -> int:
    from distill.serve.launch import LocalTeacher, build_tiny_vlm_once

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.tiny_vlm:
        build_tiny_vlm_once(cfg.tiny_vlm)
    summaries: dict[str, dict] = {}
    teacher: LocalTeacher | None = None
    try:
        for i, spec in enumerate(STAGES):
            if spec.name not in cfg.stages:
                continue
            section = getattr(cfg, spec.name)
            done_file = run_dir / spec.name / "stage.done.json"
            plain = stage_config(spec, section, run_dir, teacher_url=None)
            fp = fingerprint(yaml.safe_dump(plain, sort_keys=True), [Path(p) for p in spec.inputs(plain)])
            if spec.name not in cfg.force and done_file.exists():
                done = orjson.loads(done_file.read_bytes())
                if done.get("fingerprint") == fp:
                    log.info("stage %s: up to date, skipped", spec.name)
                    summaries[spec.name] = {**done["summary"], "status": "skipped (up to date)"}
                    continue
            url = None
            if spec.teacher_field and cfg.serve and spec.needs_teacher(plain):
                if teacher is None:
                    teacher = LocalTeacher(cfg.serve, log_path=run_dir / "serve.log").start()
                url = teacher.base_url
            launcher = cfg.train_launcher if spec.name == "train" else None
            summary = run_stage(spec, stage_config(spec, section, run_dir, url), run_dir, launcher)
            summaries[spec.name] = {**summary, "status": "ran"}
            write_json_atomic(done_file, {"fingerprint": fp, "summary": summary})
            if teacher is not None and not any(s.teacher_field and s.name in cfg.stages for s in STAGES[i + 1 :]):
                teacher.stop()  # free its memory and cores for training
                teacher = None
    finally:
        if teacher is not None:
            teacher.stop()
        write_json_atomic(run_dir / "run_summary.json", summaries)
        write_text_atomic(run_dir / "report.md", report_markdown(cfg, summaries))
    print(f"run {cfg.name}: {run_dir / 'report.md'}")
    for name, s in summaries.items():
        print(f"  {name:9s} {s['status']:20s} rows {s.get('rows_in', '-')} -> {s.get('rows_out', '-')}")
    return 0
