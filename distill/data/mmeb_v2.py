"""The 78 MMEB-V2 tasks: modality, task kind, the reader that loads each, and where it is published.

    from distill.data.mmeb_v2 import TASKS, hub_subset
    [t.name for t in TASKS if t.kind == "video_ret"]    # ['DiDeMo', 'MSR-VTT', 'MSVD', 'VATEX', 'YouCook2']
    hub_subset("arxivqa_test_subsampled_beir")           # 'ViDoRe_arxivqa': a Hub snapshot folder named as its repo

One table, so the reader dispatch (`distill.data.mmeb`), `distill validate`'s per-kind report and the table in
docs/formats.md (tests/test_mmeb_v2.py checks they agree) cannot drift apart. Kinds: image_cls, image_qa, image_ret,
image_ground (MMEB eval rows: `qry_inst`, `qry_text`, `qry_img_path`, `tgt_inst`, `tgt_text`, `tgt_img_path`),
video_cls, video_qa, video_ret, video_moment (VLM2Vec-V2's per-dataset fields, `distill.data.mmeb_video`) and visdoc
(BEIR corpus / queries / qrels with embedded page images, `distill.data.beir`). `hub` is the dataset repo (config,
split) VLM2Vec-V2's evaluation loads; image tasks are the subsets of TIGER-Lab/MMEB-eval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Task:
    name: str
    modality: str  # image | video | visdoc
    kind: str
    hub: str  # repo[:config]@split

    @property
    def reader(self) -> str:
        return {"image": "distill.data.mmeb (from_eval_row)", "video": "distill.data.mmeb_video",
                "visdoc": "distill.data.beir"}[self.modality]  # fmt: skip


def _image(kind: str, names: str) -> list[Task]:
    return [Task(n, "image", kind, f"TIGER-Lab/MMEB-eval:{n}@test") for n in names.split()]


TASKS: tuple[Task, ...] = (
    *_image("image_cls", "ImageNet-1K N24News HatefulMemes VOC2007 SUN397 Place365 ImageNet-A ImageNet-R ObjectNet "
                         "Country211"),
    *_image("image_qa", "OK-VQA A-OKVQA DocVQA InfographicsVQA ChartQA Visual7W ScienceQA VizWiz GQA TextVQA"),
    *_image("image_ret", "VisDial CIRR VisualNews_t2i VisualNews_i2t MSCOCO_t2i MSCOCO_i2t NIGHTS WebQA FashionIQ "
                         "Wiki-SS-NQ OVEN EDIS"),
    *_image("image_ground", "MSCOCO RefCOCO RefCOCO-Matching Visual7W-Pointing"),
    Task("K700", "video", "video_cls", "VLM2Vec/Kinetics-700@test"),
    Task("SmthSmthV2", "video", "video_cls", "VLM2Vec/SmthSmthV2@test"),
    Task("HMDB51", "video", "video_cls", "VLM2Vec/HMDB51@test"),
    Task("UCF101", "video", "video_cls", "VLM2Vec/UCF101@test"),
    Task("Breakfast", "video", "video_cls", "VLM2Vec/Breakfast@test"),
    Task("MVBench", "video", "video_qa", "VLM2Vec/MVBench@train"),
    Task("Video-MME", "video", "video_qa", "VLM2Vec/Video-MME@test"),
    Task("NExTQA", "video", "video_qa", "VLM2Vec/NExTQA:MC@test"),
    Task("EgoSchema", "video", "video_qa", "VLM2Vec/EgoSchema:Subset@test"),
    Task("ActivityNetQA", "video", "video_qa", "VLM2Vec/ActivityNetQA@test"),
    Task("DiDeMo", "video", "video_ret", "VLM2Vec/DiDeMo@test"),
    Task("MSR-VTT", "video", "video_ret", "VLM2Vec/MSR-VTT:test_1k@test"),
    Task("MSVD", "video", "video_ret", "VLM2Vec/MSVD@test"),
    Task("VATEX", "video", "video_ret", "VLM2Vec/VATEX@test"),
    Task("YouCook2", "video", "video_ret", "lmms-lab/YouCook2@val"),
    Task("QVHighlight", "video", "video_moment", "VLM2Vec/QVHighlight@test"),
    Task("Charades-STA", "video", "video_moment", "VLM2Vec/Charades-STA@test"),
    Task("MomentSeeker", "video", "video_moment", "VLM2Vec/MomentSeeker@test"),
    *(Task(f"ViDoRe_{n}", "visdoc", "visdoc", f"vidore/{repo}@test") for n, repo in (
        ("arxivqa", "arxivqa_test_subsampled_beir"), ("docvqa", "docvqa_test_subsampled_beir"),
        ("infovqa", "infovqa_test_subsampled_beir"), ("tabfquad", "tabfquad_test_subsampled_beir"),
        ("tatdqa", "tatdqa_test_beir"), ("shiftproject", "shiftproject_test_beir"),
        *((f"syntheticDocQA_{d}", f"syntheticDocQA_{d}_test_beir") for d in
          ("artificial_intelligence", "energy", "government_reports", "healthcare_industry")),
        ("esg_reports_human_labeled_v2", "esg_reports_human_labeled_v2"),
        ("biomedical_lectures_v2", "biomedical_lectures_v2"), ("economics_reports_v2", "economics_reports_v2"),
        ("esg_reports_v2", "esg_reports_v2"))),
    *(Task(f"VisRAG_{n}", "visdoc", "visdoc", f"openbmb/VisRAG-Ret-Test-{n}@train")
      for n in ("ArxivQA", "ChartQA", "MP-DocVQA", "SlideVQA", "InfoVQA", "PlotQA")),
    Task("ViDoSeek-page", "visdoc", "visdoc", "VLM2Vec/ViDoSeek-page-fixed@test"),
    Task("ViDoSeek-doc", "visdoc", "visdoc", "VLM2Vec/ViDoSeek@test"),
    Task("MMLongBench-page", "visdoc", "visdoc", "VLM2Vec/MMLongBench-page-fixed@test"),
    Task("MMLongBench-doc", "visdoc", "visdoc", "VLM2Vec/MMLongBench-doc@test"),
)  # fmt: skip

# ViDoRe v2 sets hold queries in four languages; MMEB-V2 scores the English ones (VLM2Vec-V2 loads them with the
# `english` language filter), so their readers keep the queries whose `language` is this.
QUERY_LANGUAGE = {f"ViDoRe_{n}_v2": "english" for n in ("biomedical_lectures", "economics_reports", "esg_reports")}


def norm(name: str) -> str:
    """A subset name with case, '-' and '_' ignored (ImageNet_1K = ImageNet-1K, Kinetics-700 = K700 via ALIASES)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


ALIASES = {"kinetics700": "K700", "msrvtt": "MSR-VTT"}  # VLM2Vec-V2 spells K700 'Kinetics-700'
BY_NAME = {norm(t.name): t for t in TASKS}
_BY_REPO = {norm(t.hub.split("@")[0].split(":")[0].split("/")[1]): t.name for t in TASKS if t.modality != "image"}


def task(subset: str) -> Task | None:
    """The MMEB-V2 task a subset name (or its Hub repo's name, e.g. a snapshot folder) stands for; None if none."""
    key = norm(subset)
    key = norm(ALIASES.get(key, "")) or key
    return BY_NAME.get(key) or BY_NAME.get(norm(_BY_REPO.get(key, "")))


def hub_subset(folder: str) -> str | None:
    """The MMEB-V2 name of a folder named after a published repo (`arxivqa_test_subsampled_beir` -> ViDoRe_arxivqa)."""
    found = task(folder)
    return found.name if found else None


def query_language(subset: str) -> str | None:
    found = task(subset)
    return QUERY_LANGUAGE.get(found.name) if found else None


SPLITS = ("test", "val", "validation", "train")  # the split read from a Hub folder: MMEB-V2 evaluates test, else these


def hub_shards(folder: Path) -> list[tuple[Path, str | None]]:
    """(parquet shard, config or None) of one split in a Hub snapshot folder: `<split>-*.parquet` files, or
    `<split>/*.parquet`, at any depth (`data/`, or one folder per config as MVBench and NExTQA publish). The first
    split of SPLITS present is read (VLM2Vec-V2 evaluates test, YouCook2 val, MVBench and VisRAG train)."""
    by_split: dict[str, list[tuple[Path, str | None]]] = {}
    for f in sorted(folder.rglob("*.parquet")):
        parts = f.relative_to(folder).parts
        split = f.name.split("-")[0] if "-" in f.name else (parts[-2] if len(parts) > 1 else "")
        config = parts[0] if len(parts) > 1 and parts[0] not in ("data", split) else None
        by_split.setdefault(split, []).append((f, config))
    for split in (*SPLITS, *sorted(by_split)):
        if by_split.get(split):
            return by_split[split]
    return []
