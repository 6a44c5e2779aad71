"""The `distill` command: one verb per stage. It only parses arguments and dispatches to the stage's `main`.

distill validate --input data/demo/train --image_root data/demo
distill <verb> --help
"""

from __future__ import annotations

import importlib
import logging
import sys

# verb -> (module, config dataclass names, one-line help). Only verbs that work are registered.
VERBS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "validate": ("distill.validate", ("ValidateConfig",), "check a dataset and its images; report bad rows by line"),
    "serve": ("distill.serve.server", ("ServeConfig",), "OpenAI-compatible server over local HF models (batched)"),
    "generate": ("distill.teacher.generate", ("GenerateConfig",), "collect teacher ECR traces (journaled, resumable)"),
    "merge": ("distill.teacher.merge", ("MergeConfig",), "join generate shards, one row per (id, sample_index)"),
    "score": ("distill.score", ("ScoreConfig",), "run named scorers over trace rows; adds `scores`, drops nothing"),
    "filter": ("distill.filter", ("FilterConfig",), "thresholds, dedup, best-of-n -> kept + rejected + report"),
    "export": ("distill.export", ("ExportConfig",), "kept traces -> TRL vision-language SFT dataset (+ JSONL)"),
    "train": ("distill.train.sft", ("TrainConfig", "ModelConfig"), "SFT the student (TRL + PEFT + DeepSpeed)"),
    "eval": ("distill.eval.stage", ("EvalConfig",), "did it work? trace quality + retrieval, teacher vs students"),
    "reason": ("distill.reason", ("ReasonConfig",), "the student writes traces (in-process or an endpoint; resumable)"),
    "run": ("distill.run", ("RunConfig",), "the whole chain from one pipeline recipe, resumable stage by stage"),
}


def _usage() -> str:
    lines = ["usage: distill <verb> [--config recipe.yaml] [--flag value ...]", "", "verbs:"]
    lines += [f"  {verb:10s} {help_}" for verb, (_, _, help_) in VERBS.items()]
    lines += ["", "distill <verb> --help lists a verb's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"distill: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, class_names, _ = VERBS[verb]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(module_name)
    from distill.configs import parse_configs
    from distill.stage import EXIT_USAGE, boundary, check_stage_io, error_line

    try:
        configs = parse_configs(tuple(getattr(module, n) for n in class_names), rest, prog=f"distill {verb}")
    except (ValueError, OSError) as e:  # bad config file, unknown keys, wrong types, values __post_init__ refuses
        print(f"distill {verb}: error: {error_line(e) or ' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE

    def stage() -> int | None:
        check_stage_io(verb, configs)  # before any request is sent or model loaded
        return module.main(*configs)

    return boundary(verb, stage)


if __name__ == "__main__":
    sys.exit(main())
