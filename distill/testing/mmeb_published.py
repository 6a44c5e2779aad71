"""Tiny MMEB-V2 data in the shapes it is published in, for tests: one folder per dataset, laid out as a Hub snapshot
(`<repo>/[<config>/]<split>-00000-of-00001.parquet`), with VLM2Vec-V2's field names, MMEB-V2's frame folders
(`video-tasks/frames/...`) and BEIR visual-document corpora whose page images are embedded in the parquet.

    python -m distill.testing.mmeb_published /tmp/mmeb       # writes the tree and prints what it holds
    from distill.testing.mmeb_published import write_published
    sets = write_published(tmp_path)    # {dataset: Published(path, kind, rows, pool)}; image_root = tmp_path

Every dataset's `pool` is the number of candidates MMEB-V2 ranks each query against for it (what
`load_examples(..., trace_side="eval")` must give): the whole label set (row labels + labels.txt) for global video
classification, the whole video pool for video retrieval, every corpus page for visual documents, the row's own
candidates otherwise. Images are 16x16 solid colours: enough to open, hash and decode, nothing to look at.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

FRAMES = "video-tasks/frames"


@dataclass
class Published:
    path: Path  # what `--input` takes
    kind: str  # mmeb_v2 kind: image_cls ... visdoc
    rows: int  # queries (rows) the reader must give
    pool: int  # candidates per query MMEB-V2 ranks against


def _png(colour: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), ((colour * 53) % 256, (colour * 97) % 256, (colour * 31) % 256)).save(buf, "PNG")
    return buf.getvalue()


def _write_image(path: Path, colour: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png(colour))


def _frames(root: Path, folder: str, n: int = 3, colour: int = 0) -> None:
    for i in range(n):
        with Image.open(io.BytesIO(_png(colour + i))) as im:
            (root / folder).mkdir(parents=True, exist_ok=True)
            im.save(root / folder / f"frame_{i:04d}.jpg", "JPEG")


def _parquet(path: Path, rows: list[dict], features=None, row_group: int = 2) -> None:
    from datasets import Dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows, features=features).to_parquet(str(path), batch_size=row_group)


def _image_sets(root: Path) -> dict[str, Published]:
    """MMEB-eval rows (TIGER-Lab/MMEB-eval, one config per dataset): 3 queries x 4 candidates each."""
    out = {}
    shapes = {"ImageNet-1K": "image_cls", "OK-VQA": "image_qa", "MSCOCO_t2i": "image_ret", "RefCOCO": "image_ground"}
    for k, (name, kind) in enumerate(shapes.items()):
        rows = []
        for r in range(3):
            img = f"eval_images/{name}/q{r}.png"
            _write_image(root / img, 10 * k + r)
            cands = [f"eval_images/{name}/c{r}_{c}.png" for c in range(4)]
            for c, p in enumerate(cands):
                _write_image(root / p, 10 * k + r + c + 1)
            text_cands = kind in ("image_cls", "image_qa")
            rows.append({
                "qry_inst": {"image_cls": "<|image_1|> Represent the given image for classification",
                             "image_qa": "<|image_1|> Represent the given image with the following question:",
                             "image_ret": "Find me an everyday image that matches the given caption:",
                             "image_ground": "<|image_1|> Select the portion of the image that isolates the object "
                                             "labeled as"}[kind],
                "qry_text": "" if kind == "image_cls" else f"what is shown in picture {r}?",
                "qry_img_path": "" if kind == "image_ret" else img,
                "tgt_inst": "" if text_cands else "<|image_1|> Represent the given image.",
                "tgt_text": [f"answer {r}-{c}" for c in range(4)] if text_cands else ["<|image_1|>"] * 4,
                "tgt_img_path": [""] * 4 if text_cands else cands,
            })  # fmt: skip
        out[name] = Published(root / "MMEB-eval" / name, kind, 3, 4)
        _parquet(out[name].path / "test-00000-of-00001.parquet", rows)
    return out


def _video_sets(root: Path) -> dict[str, Published]:
    """VLM2Vec-V2's video rows, one Hub folder per dataset, frames where MMEB-V2 ships them."""
    out, hub = {}, root / "video"

    def put(name: str, kind: str, folder: str, rows: list[dict], pool: int, videos: list[str], config: str = ""):
        for i, v in enumerate(videos):
            _frames(root, f"{FRAMES}/{folder}/{v}", colour=i)
        split = "train" if name == "MVBench" else "val" if name == "YouCook2" else "test"
        out[name] = Published(hub / name, kind, len(rows), pool)
        _parquet(hub / name / (config or "data") / f"{split}-00000-of-00001.parquet", rows)

    labels = ["brush_hair", "cartwheel", "catch"]
    put(
        "HMDB51",
        "video_cls",
        "video_cls/HMDB51",
        [{"video_id": f"v{i}", "pos_text": labels[i % 3]} for i in range(4)],
        5,
        [f"v{i}" for i in range(4)],
    )
    (hub / "HMDB51" / "labels.txt").write_text("\n".join([*labels, "chew", "clap"]) + "\n")  # 2 labels no row uses
    ssv2 = ["Closing something", "Opening something", "Folding something", "Holding something"]
    put(
        "SmthSmthV2",
        "video_cls",
        "video_cls/SSv2",
        [{"video_id": 100 + i, "pos_text": ssv2[i], "neg_text": ssv2} for i in range(2)],
        4,
        ["100", "101"],
    )
    put(
        "NExTQA",
        "video_qa",
        "video_qa/NExTQA",
        [
            {
                "video": 4010 + i,
                "question": "why did the boy run",
                "answer": i,
                "qid": i,
                "type": "CW",
                **{f"a{j}": f"option {j}" for j in range(5)},
            }
            for i in range(2)
        ],
        5,
        ["4010", "4011"],
        config="MC",
    )
    put(
        "Video-MME",
        "video_qa",
        "video_qa/Video-MME",
        [
            {
                "videoID": f"vm{i}",
                "question": "What colour is the car?",
                "options": ["A. red", "B. blue", "C. green", "D. white"],
                "answer": "B",
                "question_id": f"{i}",
                "domain": "d",
                "sub_category": "s",
            }
            for i in range(2)
        ],
        4,
        ["vm0", "vm1"],
    )
    put(
        "EgoSchema",
        "video_qa",
        "video_qa/EgoSchema",
        [
            {
                "video_idx": f"eg{i}",
                "question": "What is C doing?",
                "option": [f"{c}. doing {c}" for c in "ABCDE"],
                "answer": "2",
                "question_idx": f"{i}",
            }
            for i in range(2)
        ],
        5,
        ["eg0", "eg1"],
        config="Subset",
    )
    put(
        "MVBench",
        "video_qa",
        "video_qa/MVBench/action_sequence",
        [
            {
                "question": "What did the person do first?",
                "video": f"mv{i}.mp4",
                "candidates": ["sat", "stood", "ran"],
                "answer": "stood",
            }
            for i in range(2)
        ],
        3,
        ["mv0.mp4", "mv1.mp4"],
        config="action_sequence",
    )
    put(
        "ActivityNetQA",
        "video_qa",
        "video_qa/ActivityNetQA",
        [
            {
                "video_name": f"an{i}",
                "question": "is the person outdoors",
                "answer": "yes" if i else "no",
                "question_id": f"{i}",
            }
            for i in range(2)
        ],
        2,
        ["v_an0", "v_an1"],
    )
    put(
        "MSR-VTT",
        "video_ret",
        "video_ret/MSR-VTT",
        [{"video_id": f"video{i}", "video": f"video{i}.mp4", "caption": f"a clip number {i}"} for i in range(3)],
        3,
        [f"video{i}" for i in range(3)],
        config="test_1k",
    )
    put(
        "DiDeMo",
        "video_ret",
        "video_ret/DiDeMo",
        [{"video": f"dd/d{i}.mp4", "caption": f"scene {i}"} for i in range(3)],
        3,
        [f"d{i}" for i in range(3)],
    )
    put(
        "MSVD",
        "video_ret",
        "video_ret/MSVD",
        [{"video_id": f"m{i}", "video": f"m{i}.avi", "caption": [f"summary {i}", "other"]} for i in range(3)],
        3,
        [f"m{i}" for i in range(3)],
    )
    put(
        "VATEX",
        "video_ret",
        "video_ret/VATEX",
        [{"videoID": f"vx{i}", "enCap": [f"description {i}", "more"]} for i in range(3)],
        3,
        [f"vx{i}" for i in range(3)],
    )
    put(
        "YouCook2",
        "video_ret",
        "video_ret/YouCook2",
        [{"id": f"yc{i}", "video_path": f"val/yc{i}.mp4", "sentence": f"add salt {i}"} for i in range(3)],
        3,
        [f"yc{i}" for i in range(3)],
    )
    for name, folder in (("QVHighlight", "video_mret/QVHighlight"), ("Charades-STA", "video_mret/Charades_STA")):
        clips = ["query", "positive_0", "negative_0", "negative_1", "negative_2"]
        put(name, "video_moment", folder, [{"query": f"the moment {i}", "video_path": f"videos/q{i}.mp4"}
                                           for i in range(2)], 4, [f"q{i}/{c}" for i in range(2) for c in clips])  # fmt: skip
    ms = "video_mret/MomentSeeker/video_frames"
    put(
        "MomentSeeker",
        "video_moment",
        "video_mret/MomentSeeker",
        [
            {
                "query": "the dog jumps",
                "input_frames": "",
                "positive_frames": [{"output_path": "clips/a_pos.mp4"}],
                "negative_frames": [{"output_path": f"clips/a_neg{j}.mp4"} for j in range(3)],
            }
        ],
        4,
        [],
    )
    for c in ("clips_a_pos", *(f"clips_a_neg{j}" for j in range(3))):
        _frames(root, f"{FRAMES}/{ms}/{c}")
    return out


def _visdoc_sets(root: Path) -> dict[str, Published]:
    """BEIR corpora as the Hub publishes them: corpus / queries / qrels folders of parquet, pages embedded."""
    from datasets import Features, Image, Value

    out = {}
    specs = (("arxivqa_test_subsampled_beir", "test", False, 5), ("VisRAG-Ret-Test-ChartQA", "train", True, 4),
             ("biomedical_lectures_v2", "test", False, 4))  # fmt: skip
    for repo, split, str_ids, pages in specs:
        base = root / "visdoc" / repo
        ids = [f"page_{i}.png" if str_ids else i for i in range(pages)]
        id_type = Value("string") if str_ids else Value("int64")
        corpus = [{"corpus-id": cid, "image": {"bytes": _png(40 + i), "path": f"{cid}.png"}}
                  for i, cid in enumerate(ids)]  # fmt: skip
        _parquet(base / "corpus" / f"{split}-00000-of-00001.parquet", corpus,
                 Features({"corpus-id": id_type, "image": Image()}))  # fmt: skip
        v2 = repo.endswith("_v2")  # ViDoRe v2: queries in several languages, MMEB-V2 keeps the English ones
        queries = [{"query-id": q, "query": f"which page shows figure {q}?", **({"language": lang} if v2 else {})}
                   for q, lang in enumerate(["english", "english", "french"] if v2 else ["english"] * 3)]  # fmt: skip
        _parquet(base / "queries" / f"{split}-00000-of-00001.parquet", queries)
        qrels = [{"query-id": q["query-id"], "corpus-id": ids[q["query-id"]], "score": 1} for q in queries]
        qrels.append({"query-id": 0, "corpus-id": ids[-1], "score": 2})  # query 0: two relevant pages, graded
        _parquet(base / "qrels" / f"{split}-00000-of-00001.parquet", qrels,
                 Features({"query-id": Value("int64"), "corpus-id": id_type, "score": Value("int64")}))  # fmt: skip
        out[repo] = Published(base, "visdoc", 2 if v2 else 3, pages)
    return out


def write_published(root: str | Path) -> dict[str, Published]:
    """Write every fixture under `root` (also the image_root); returns {dataset folder name: Published}."""
    import datasets

    datasets.disable_progress_bars()  # a test fixture: no bars for a few rows
    root = Path(root)
    return {**_image_sets(root), **_video_sets(root), **_visdoc_sets(root)}


if __name__ == "__main__":
    for name, p in write_published(sys.argv[1] if len(sys.argv) > 1 else "mmeb_published").items():
        print(f"{name:32s} {p.kind:13s} rows={p.rows} pool={p.pool}  {p.path}")
