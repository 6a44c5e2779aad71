"""`distill run`: the whole chain (generate -> score -> filter -> export -> train, then optionally the student's
traces on held-out rows and the eval report) from one pipeline recipe.

    distill run --config recipes/demo/pipeline.yaml

Each stage runs as its own `distill <verb>` subprocess (training keeps global accelerate/DeepSpeed state) with a stage
config written to `runs/<name>/<stage>/stage_config.yaml`: the stage's recipe, the pipeline's overrides, the values
shared by every stage (`image_root`, `min_pixels`, `max_pixels`: set once in the pipeline recipe) and the paths that
wire it to the previous stage. Every stage's config is resolved and checked before the first stage starts, so a typo in
`train:` fails in seconds, not after generate. A stage is skipped when it finished before with the same fingerprint
(`distill.fingerprint`: its config and everything it reads), so a crashed run resumes where it stopped; `generate`
itself resumes request by request from its journal. A `generate` or `reason` stage whose rows failed for a reason a
retry can cure (HTTP 5xx, timeouts) is not marked done, so the next `distill run` retries exactly those rows. When the
recipe has a `serve` section, a local teacher (`distill serve`) is started on a free loopback port for the stages that
need it and stopped afterwards. Each child runs in its
own process group owned by `run`: SIGTERM / SIGINT stop the running stage's whole group, then the local teacher.
Like every verb it keeps the stage contract (`distill.stage`): `runs/<name>/config.yaml` (the resolved pipeline
config) and `runs/<name>/summary.json` (the shared schema, with `stages`: each stage's summary and status); and
`runs/<name>/report.md`, a table of the stages, written even when a stage fails or the run is stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import time
from pathlib import Path

import orjson
import yaml

from distill.cli import load_stage
from distill.configs import ConfigError, configs_from_mapping, read_yaml_mapping, renamed_keys
from distill.fingerprint import fingerprint, read_paths, referenced_images
from distill.io import write_json_atomic, write_text_atomic
from distill.pipeline_stages import STAGES, StageSpec, stage_summary
from distill.run_config import SHARED_FIELDS, RunConfig, ServeSection  # noqa: F401 (ServeSection: the recipe's part)
from distill.run_process import raise_stopped, run_teed
from distill.stage import Paths, Stage, StageError
from distill.stage import summary as stage_contract_summary
from distill.urls import redacted

log = logging.getLogger(__name__)


def stage_config(spec: StageSpec, section: dict | None, run_dir: Path, teacher_url: str | None,
                 shared: dict | None = None, declared: list[str] = ()) -> dict:  # fmt: skip
    """The stage's recipe + the pipeline's overrides + shared values + wired paths, those of optional stages only when
    `declared` names them (shared values and wired paths win over a recipe: they define the run; a section that sets a
    shared value differently is an error)."""
    classes = load_stage(spec.verb).configs
    # old spellings (base_url) read as new ones in each mapping, so a section's old key overrides its recipe's new one
    section = renamed_keys(classes, section or {}, spec.name)
    recipe = section.pop("recipe", None)
    merged = renamed_keys(classes, read_yaml_mapping(recipe), str(recipe)) if recipe else {}
    merged.update(section)
    if shared:
        fields = {f.name for cls in classes for f in dataclasses.fields(cls)}
        for key, value in shared.items():
            if value is None or key not in fields:
                continue
            if key in section and section[key] != value:
                raise ConfigError(f"{spec.name}: {key}: {section[key]!r} differs from the pipeline's {key} "
                                  f"{value!r}; set it once, at the top of the pipeline recipe")  # fmt: skip
            merged[key] = value
    merged.update(spec.wire(run_dir))
    merged.update(spec.wire_declared(run_dir, list(declared)))
    if teacher_url and spec.use_teacher:
        merged = spec.use_teacher(merged, teacher_url)
    return merged


def check_stage_configs(cfg: RunConfig) -> dict[str, dict]:
    """Every selected stage's config, resolved and checked (types, unknown keys, __post_init__) before any stage
    runs; ConfigError naming the stage otherwise. Returns stage name -> merged config dict."""
    plain = {}
    for spec in STAGES:
        if spec.name not in cfg.stages:
            continue
        section = getattr(cfg, spec.name)
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{spec.name}: expected a mapping (recipe: FILE plus overrides), got {section!r}")
        merged = stage_config(spec, section, cfg.run_dir, None, shared(cfg), cfg.declared)
        configs_from_mapping(load_stage(spec.verb).configs, merged, f"pipeline stage {spec.name}")
        plain[spec.name] = merged
    return plain


def shared(cfg: RunConfig) -> dict:
    return {k: getattr(cfg, k) for k in SHARED_FIELDS}


def run_stage(spec: StageSpec, config: dict, run_dir: Path, launcher: list[str] | None = None) -> dict:
    """Run one stage as a subprocess (under `launcher`, e.g. accelerate launch, when given), logging to
    <stage>/stage.log; returns its summary (read from the file the stage wrote). StageError on failure."""
    stage_dir = run_dir / spec.name
    stage_dir.mkdir(parents=True, exist_ok=True)
    config_path = stage_dir / "stage_config.yaml"
    private = redacted(config) != config  # the child needs the URL as given: keep the file its owner's alone
    if private:
        log.warning("stage %s: its config holds credentials in a URL; %s is written readable by you only (an API key "
                    "in an environment variable, --api_key_env, keeps them out of files)", spec.name, config_path)  # fmt: skip
    write_text_atomic(config_path, yaml.safe_dump(config, sort_keys=False), private=private)
    prefix = [*launcher, "-m"] if launcher else [sys.executable, "-m"]
    cmd = [*prefix, "distill", spec.verb, "--config", str(config_path)]
    log.info("stage %s: %s", spec.name, " ".join(cmd))
    start = time.time()
    returncode = run_teed(cmd, stage_dir / "stage.log")
    seconds = time.time() - start
    if returncode != 0:
        raise StageError(f"stage {spec.name} failed (exit {returncode}); see {stage_dir / 'stage.log'}")
    return {**stage_summary(spec, config), "seconds": round(seconds, 2)}


def report_markdown(cfg: RunConfig, summaries: dict[str, dict]) -> str:
    lines = [f"# Run `{cfg.name}`", "", "| stage | status | rows in | rows out | seconds | tokens | report |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for spec in STAGES:
        s = summaries.get(spec.name)
        if s is None:
            continue
        report = spec.report or (Path(s["summary"]).relative_to(cfg.run_dir / spec.name) if s.get("summary") else "")
        link = f"[{report}]({spec.name}/{report})" if report else ""
        lines.append(f"| {spec.name} | {s['status']} | {s.get('rows_in', '')} | {s.get('rows_out', '')} | "
                     f"{s.get('seconds', '')} | {s.get('tokens', '')} | {link} |")  # fmt: skip
    lines += ["", "Each stage directory holds the config it ran with (`stage_config.yaml`) and its log (`stage.log`)."]
    return "\n".join(lines) + "\n"


def stage_fingerprint(spec: StageSpec, plain: dict, run_dir: Path) -> str:
    """What decides whether `spec` is up to date: its config, what it declares it reads inside the run directory
    (earlier stages' outputs), every other path its resolved config names (templates, model and tokenizer dirs, ...)
    and the images its rows reference (`distill.fingerprint`)."""
    from distill.configs import config_dict

    stage = load_stage(spec.verb)
    configs = configs_from_mapping(stage.configs, plain, f"pipeline stage {spec.name}")
    resolved = config_dict(*configs)
    if spec.fingerprint_inputs:
        wired = [Path(p) for p in spec.fingerprint_inputs(plain)]
    else:
        io, inside = stage.paths(*configs), run_dir.resolve()
        wired = [Path(p) for p in (*io.reads, *io.read_files) if p and inside in Path(p).resolve().parents]
    if "prompts_dir" in resolved and not resolved["prompts_dir"]:  # the templates shipped in the package are read
        from distill.teacher.prompts import installed_prompts_dir

        resolved["prompts_dir"] = str(installed_prompts_dir())
    others = read_paths(resolved, skip_under=[run_dir / s.name for s in STAGES] + wired)
    images = referenced_images(plain.get("input"), resolved.get("image_root"), resolved.get("subset"))
    if "image_root" not in resolved:
        images = []
    return fingerprint(yaml.safe_dump(plain, sort_keys=True), [*wired, *others], images)


def retryable_failures(spec: StageSpec, summary: dict) -> int:
    """Rows a teacher or student stage (generate, reason) wrote as `failed` for a reason a retry can cure (HTTP 5xx,
    timeouts, a teacher that went away); unreadable input (`bad input`) fails the same way on every try."""
    if spec.verb not in ("generate", "reason"):
        return 0
    return sum(n for k, n in (summary.get("dropped") or {}).items()
               if k.startswith("failed: ") and not k.startswith("failed: bad input"))  # fmt: skip


def run(cfg: RunConfig) -> dict:
    """Every selected stage in order (skipping those up to date); the run's summary (`stages`: each one's)."""
    from distill.serve.launch import LocalTeacher, build_tiny_vlm_once

    start, run_dir = time.monotonic(), cfg.run_dir
    plain_configs = check_stage_configs(cfg)  # every stage, before the first one starts: a typo fails in seconds
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.tiny_vlm:
        build_tiny_vlm_once(cfg.tiny_vlm)
    summaries: dict[str, dict] = {}
    teacher: LocalTeacher | None = None
    previous = {sig: signal.signal(sig, raise_stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i, spec in enumerate(STAGES):
            if spec.name not in cfg.stages:
                continue
            section = getattr(cfg, spec.name)
            done_file = run_dir / spec.name / "stage.done.json"
            plain = plain_configs[spec.name]
            fp = stage_fingerprint(spec, plain, run_dir)
            if spec.name not in cfg.force and done_file.exists():
                done = orjson.loads(done_file.read_bytes())
                if done.get("fingerprint") == fp:
                    log.info("stage %s: up to date, skipped", spec.name)
                    summaries[spec.name] = {**done["summary"], "status": "skipped (up to date)"}
                    continue
            url = None
            if spec.use_teacher and cfg.serve and spec.needs_teacher(plain):
                if teacher is None:
                    teacher = LocalTeacher(dataclasses.asdict(cfg.serve), log_path=run_dir / "serve.log").start()
                url = teacher.base_url
            launcher = cfg.train_launcher if spec.name == "train" else None
            config = stage_config(spec, section, run_dir, url, shared(cfg), cfg.declared)
            summary = run_stage(spec, config, run_dir, launcher)
            summaries[spec.name] = {**summary, "status": "ran"}
            if retry := retryable_failures(spec, summary):
                # not marked done: the next `distill run` retries these rows (answers already journaled are reused)
                done_file.unlink(missing_ok=True)
                summaries[spec.name]["status"] = f"ran, {retry} to retry"
                log.warning("stage %s: %d row(s) failed (%s); rerun `distill run` to retry them, answers already "
                            "journaled are not asked again", spec.name, retry,
                            ", ".join(k for k in summary["dropped"] if k.startswith("failed: ")))  # fmt: skip
            else:
                write_json_atomic(done_file, {"fingerprint": fp, "summary": summary})
            if teacher is not None and not any(
                s.use_teacher and s.name in cfg.stages and s.needs_teacher(plain_configs[s.name])
                for s in STAGES[i + 1 :]
            ):
                teacher.stop()  # free its memory and cores for training
                teacher = None
    finally:
        # The running stage's group is already stopped (`run_teed`); the teacher goes last, whatever happened.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if teacher is not None:
            teacher.stop()
        write_text_atomic(run_dir / "report.md", report_markdown(cfg, summaries))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"run {cfg.name}: {run_dir / 'report.md'}")
    for name, s in summaries.items():
        print(f"  {name:13s} {s['status']:20s} rows {s.get('rows_in', '-')} -> {s.get('rows_out', '-')}")
    first, last = (summaries[n] for n in (next(iter(summaries)), next(reversed(summaries)))) if summaries else ({}, {})
    return stage_contract_summary("run", first.get("rows_in"), last.get("rows_out"), time.monotonic() - start,
                                  name=cfg.name, stages=summaries)  # fmt: skip


STAGE = Stage(
    "run",
    (RunConfig,),
    run,
    output="run_dir",  # a property: <runs_root>/<name>
    writes="each stage's outputs, config and log in <runs_root>/<name>/<stage>/, and report.md",
    paths=lambda c: Paths(write_dirs=[c.run_dir]),
)
main = STAGE.main
