"""The `distill` command: one verb per stage. It parses arguments, then hands the configs to the verb's declared
`Stage` (`distill.stage`), which keeps the contract (checks, resolved config, summary, one-line errors).

distill validate --input data/demo/train --image_root data/demo
distill <verb> --help
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import sys

# verb -> (the module declaring its `STAGE`, one-line help). Modules load only when their verb runs (torch is slow).
VERBS: dict[str, tuple[str, str]] = {
    "validate": ("distill.validate", "check a dataset and its images; report bad rows by line"),
    "serve": ("distill.serve.server", "OpenAI-compatible server over local HF models (batched)"),
    "generate": ("distill.teacher.generate", "collect teacher ECR traces (journaled, resumable)"),
    "merge": ("distill.teacher.merge", "join generate shards, one row per (id, sample_index)"),
    "score": ("distill.score", "run named scorers over trace rows; adds `scores`, drops nothing"),
    "filter": ("distill.filter", "thresholds, dedup, best-of-n -> kept + rejected + report"),
    "export": ("distill.export", "kept traces -> TRL vision-language SFT dataset (+ JSONL)"),
    "train": ("distill.train.sft", "SFT the student (TRL + PEFT + DeepSpeed)"),
    "eval": ("distill.eval.stage", "did it work? trace quality + retrieval, teacher vs students"),
    "embed": ("distill.embed.stage", "train the trace-conditioned embedder (TTE) on examples + traces"),
    "reason": ("distill.reason", "the student writes traces (in-process or an endpoint; resumable)"),
    "run": ("distill.run", "the whole chain from one pipeline recipe, resumable stage by stage"),
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def load_stage(verb: str):
    """The `Stage` a verb's module declares (imports the module)."""
    return importlib.import_module(VERBS[verb][0]).STAGE


def _usage() -> str:
    lines = ["usage: distill <verb> [--config recipe.yaml] [--log_level LEVEL] [--flag value ...]", "", "verbs:"]
    lines += [f"  {verb:10s} {help_}" for verb, (_, help_) in VERBS.items()]
    lines += ["", "distill <verb> --help lists a verb's flags. Exit statuses: docs/formats.md."]
    return "\n".join(lines)


def _log_level(argv: list[str], stage) -> str | None:
    """`--log_level`'s value, taken out of argv unless a config has the field too (train: TrainingArguments')."""
    if "--log_level" not in argv:
        return "INFO"
    i = argv.index("--log_level")
    value = argv[i + 1].upper() if i + 1 < len(argv) else None
    if any(f.name == "log_level" for c in stage.configs for f in dataclasses.fields(c)):
        return value if value in LOG_LEVELS else "INFO"  # HF's own levels (passive, critical) are its to check
    del argv[i : i + 2]
    return value


def main(argv: list[str] | None = None) -> int:
    from distill.stage import EXIT_USAGE, boundary

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"distill: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USAGE
    started: list = []  # (stage, configs) once the verb's module loads and its flags parse
    rc = boundary(verb, lambda: started.extend(_start(verb, rest)))  # a missing extra, bad flags, config, values
    return rc if rc else started[0].main(*started[1])


def _start(verb: str, argv: list[str]) -> tuple:
    """(the verb's `Stage`, its parsed configs), logging set up in between. Raises what `boundary` turns into one
    line (a missing extra's ModuleNotFoundError, ConfigError); argparse exits by itself on --help and bad flags."""
    from distill.configs import ConfigError, parse_configs
    from distill.urls import redact_logs

    stage = load_stage(verb)
    level = _log_level(argv, stage)
    if level not in LOG_LEVELS:
        raise ConfigError(f"--log_level: expected one of {', '.join(LOG_LEVELS)}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_logs()  # credentials in a --base_urls URL never reach a log line
    configs = parse_configs(stage.configs, argv, prog=f"distill {verb}", description=VERBS[verb][1],
                            epilog=_epilog(stage))  # fmt: skip
    return stage, configs


def _epilog(stage) -> str:
    where = f"Output: --{stage.output}" if stage.output else "Output: none written"
    if stage.output:
        where += "; beside it the resolved config and the summary (docs/formats.md, 'The stage contract')"
    return f"{where}{'; ' + stage.writes if stage.writes else ''}. Exit statuses: docs/formats.md."


if __name__ == "__main__":
    sys.exit(main())
