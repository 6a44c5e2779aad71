"""Which Trainer checkpoint a rerun resumes from, for `distill train` and `distill embed`.

Why not transformers' `get_last_checkpoint`: it takes the highest `checkpoint-N` even when a kill -9 cut that save
short (the Trainer writes checkpoints in place, not to a temporary folder). `trainer_state.json` is the last file a
checkpoint save writes, so its presence marks a complete one; an incomplete newer one is passed over.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

LAST = ("last", "true")
FRESH = ("", "none", "null", "false")


def newest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The `checkpoint-N` in `output_dir` with the highest N whose save finished; None when there is none."""
    done = [p for p in Path(output_dir).glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]  # fmt: skip
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def resume_checkpoint(value: str | None, output_dir: str | Path) -> str | None:
    """`resume_from_checkpoint` as the Trainer takes it: None to start fresh ("none", "false"), the newest complete
    checkpoint for "last" (None when there is none: a first run), any other value as the checkpoint path it names."""
    if value is None or str(value).lower() in FRESH:
        return None
    if str(value).lower() not in LAST:
        return value
    newest = newest_complete_checkpoint(output_dir)
    log.info("resume: %s", newest or f"no complete checkpoint in {output_dir}, starting fresh")
    return str(newest) if newest else None
