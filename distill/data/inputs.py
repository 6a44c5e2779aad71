"""What `--input` names: one dataset (a file, a saved `datasets` directory, a visual-document corpus, a dataset folder
as the Hub publishes it) or a directory of datasets; and the rows of a published folder's parquet shards.

    from distill.data.inputs import input_files
    input_files(Path("/data/mmeb/video"))    # [.../DiDeMo, .../HMDB51, ...]: one entry per dataset

`distill.data.mmeb.load_examples` reads each entry; `distill.data.mmeb.read_inputs` reads all of `--input` (eval, embed).
"""

from __future__ import annotations

from pathlib import Path

from distill.io import BadRow, iter_table


def hub_rows(shards: list, folder: Path):
    """Rows of a Hub snapshot's shards; problems name the shard. A config folder (MVBench's sub-tasks) fills `subset`."""
    for f, config in shards:
        for line, row in iter_table(f):
            if isinstance(row, BadRow):
                row.reason = f"{f.relative_to(folder)}: {row.reason}"
            elif config and "subset" not in row:
                row = {**row, "subset": config}
            yield line, row


def dataset_files(path: Path) -> list[Path]:
    """What a directory of datasets holds, one entry per dataset: `*.jsonl` / `*.parquet` files (the stem names the
    subset), visual-document corpora and folders named after an MMEB-V2 dataset or its Hub repo (a Hub snapshot)."""
    from distill.data.beir import is_beir_dir
    from distill.data.mmeb_v2 import hub_subset

    folders = [d for d in path.iterdir() if d.is_dir() and (is_beir_dir(d) or hub_subset(d.name))]
    return sorted([*path.glob("*.jsonl"), *path.glob("*.parquet"), *folders])


def is_published_folder(path: Path, subset: str | None = None) -> bool:
    """A folder holding one dataset as the Hub publishes it: named after an MMEB-V2 dataset or its repo (or read with
    `--subset`), no `*.jsonl` in it, parquet shards below it (`distill.data.mmeb_v2.hub_shards`)."""
    from distill.data.mmeb_v2 import hub_shards, hub_subset

    if not path.is_dir() or (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        return False
    named = hub_subset(path.name) or (subset and not any(path.glob("*.parquet")))
    return bool(named) and not any(path.glob("*.jsonl")) and bool(hub_shards(path))


def input_files(path: Path, subset: str | None = None) -> list[Path]:
    """What `--input` names, one entry per dataset: the path itself (a file, a saved dataset, a visual-document
    corpus, a published dataset folder), or the datasets of a directory (`dataset_files`)."""
    from distill.data.beir import is_beir_dir

    plain = not path.is_dir() or (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    if plain or is_beir_dir(path) or is_published_folder(path, subset):
        return [path]
    return dataset_files(path)
