"""Hub-ready folders: parquet shards in the Hub's dataset layout, dataset cards, and the upload.

    distill export --input runs/x/filter/kept.jsonl --output runs/x/export/dataset --push_to_hub me/x-sft
    distill train --config recipes/demo/train.yaml --push_to_hub me/x-student

Dataset layout (what `datasets.push_to_hub` writes, so the Hub's viewer, `load_dataset(dir_or_repo)` and
`trl sft --dataset_name dir_or_repo` read it as is):
    README.md                            dataset card: YAML (configs -> data files per split, features, splits,
                                         sizes, task categories, tags, license) and a body saying how it was made
    data/<split>-00000-of-0000N.parquet  rows, images embedded as bytes (`datasets.Image` feature)
    <config>/<split>-...parquet          (several configs, e.g. trace datasets: kept/, rejected/, traces/)
Uploads go through `huggingface_hub.HfApi.upload_folder` once every file in the folder is final, to a private repo
unless asked otherwise; only the files `upload_plan` lists are sent (no local manifests with machine paths).
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# datasets.config.MAX_SHARD_SIZE: the shard size `push_to_hub` uses; the Hub's viewer streams shards of this size well
MAX_SHARD_BYTES = 500 << 20
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]  # fmt: skip


def size_category(n: int) -> str:
    """The Hub's `size_categories` value for n rows."""
    return next((name for limit, name in _SIZES if n < limit), "n>1T" if n > 10**12 else "100M<n<1B")


@dataclass
class ConfigShards:
    """One written config: its name, split, data file pattern, rows, in-memory bytes, parquet bytes, features."""

    config_name: str
    split: str
    pattern: str
    num_rows: int
    num_bytes: int
    download_size: int
    features: object  # datasets.Features


def write_parquet_shards(dataset, folder: str | Path, data_dir: str = "data", split: str = "train",
                         config_name: str = "default", max_shard_bytes: int = MAX_SHARD_BYTES) -> ConfigShards:  # fmt: skip
    """Write `dataset` as `<folder>/<data_dir>/<split>-0000i-of-0000N.parquet` (images embedded, as `push_to_hub`).

    The shards go to a temporary dir first and replace `<data_dir>` in one rename, so a reader never sees a mix.
    """
    folder = Path(folder)
    nbytes = int(dataset.data.nbytes)
    n = max(1, math.ceil(nbytes / max_shard_bytes))
    tmp = folder / f".{data_dir}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    size = 0
    for i in range(n):
        path = tmp / f"{split}-{i:05d}-of-{n:05d}.parquet"
        dataset.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(path))
        size += path.stat().st_size
    shutil.rmtree(folder / data_dir, ignore_errors=True)
    os.replace(tmp, folder / data_dir)
    return ConfigShards(config_name, split, f"{data_dir}/{split}-*", len(dataset), nbytes, size, dataset.features)


def dataset_card(configs: list[ConfigShards], body: str, tags: list[str], license: str | None = None,
                 pretty_name: str | None = None, task_categories: tuple[str, ...] = ("image-text-to-text",)):  # fmt: skip
    """A `huggingface_hub.DatasetCard` whose YAML names every config's data files, features, splits and sizes."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard, DatasetCardData

    infos = DatasetInfosDict()  # the YAML `push_to_hub` writes, through datasets' public writer
    for c in configs:
        splits = SplitDict()
        splits.add(SplitInfo(name=c.split, num_bytes=c.num_bytes, num_examples=c.num_rows))
        infos[c.config_name] = DatasetInfo(features=c.features, splits=splits, download_size=c.download_size,
                                           dataset_size=c.num_bytes)  # fmt: skip
    data = DatasetCardData(
        license=license,
        pretty_name=pretty_name,
        task_categories=list(task_categories),
        tags=tags,
        size_categories=[size_category(sum(c.num_rows for c in configs))],
        # several configs: the first is what `load_dataset(repo)` gives without a config name
        configs=[
            {
                "config_name": c.config_name,
                **({"default": True} if i == 0 and len(configs) > 1 else {}),
                "data_files": [{"split": c.split, "path": c.pattern}],
            }
            for i, c in enumerate(configs)
        ],  # fmt: skip
    )
    infos.to_dataset_card_data(data)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")


def md_table(header: tuple[str, ...], rows) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]


def upload_plan(folder: str | Path, allow_patterns: list[str]) -> list[str]:
    """The files (relative, sorted) that `push_folder` sends: those matching `allow_patterns`, as the Hub matches."""
    folder = Path(folder)
    files = (str(p.relative_to(folder)).replace(os.sep, "/") for p in folder.rglob("*") if p.is_file())
    return sorted(f for f in files if any(fnmatch.fnmatch(f, pat) for pat in allow_patterns))


def push_folder(folder: str | Path, repo_id: str, repo_type: str, allow_patterns: list[str], private: bool = True,
                commit_message: str = "Upload with distill") -> str:  # fmt: skip
    """Create `repo_id` (private by default; kept as is if it exists) and upload the planned files; returns the URL.

    The token comes from huggingface_hub's usual places (`HF_TOKEN`, `hf auth login`) and is never logged.
    """
    from huggingface_hub import HfApi

    files = upload_plan(folder, allow_patterns)
    if not files:
        raise ValueError(f"{folder}: nothing to upload (no file matches {allow_patterns})")
    log.info("uploading %d files from %s to %s (%s, private=%s): %s", len(files), folder, repo_id, repo_type, private,
             files[:20])  # fmt: skip
    api = HfApi()
    repo = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(repo_id=getattr(repo, "repo_id", repo_id), folder_path=str(folder), repo_type=repo_type,
                      allow_patterns=allow_patterns, commit_message=commit_message)  # fmt: skip
    prefix = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
    return f"https://huggingface.co/{prefix}{getattr(repo, 'repo_id', repo_id)}"
