import json

import pytest
from datasets import Dataset

from distill.data.mmeb import SUBSET_TASKS, load_examples, subset_task
from distill.io import BadRow
from distill.records import example_problems

TRAIN_ROWS = [
    {"qry": "<|image_1|> Represent the given image with the following question: What is the man holding?",
     "qry_image_path": "img/a.jpg", "pos_text": "umbrella", "pos_image_path": "", "neg_text": "", "neg_image_path": ""},
    {"qry": "<|image_1|> Represent the given image with the following question: Is it raining?",
     "qry_image_path": "img/b.jpg", "pos_text": "yes", "pos_image_path": "", "neg_text": "no", "neg_image_path": ""},
]  # fmt: skip
EVAL_ROWS = [
    {"qry_inst": "<|image_1|> Represent the given image for classification", "qry_text": "", "qry_img_path": "img/c.jpg",
     "tgt_inst": "Represent the class label:", "tgt_text": ["tabby cat", "dog", "car"], "tgt_img_path": ["", "", ""]},
]  # fmt: skip


def _write(tmp_path, name, rows, fmt):
    if fmt == "jsonl":
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "parquet":
        path = tmp_path / f"{name}.parquet"
        Dataset.from_list(rows).to_parquet(str(path))
    else:
        path = tmp_path / name
        Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "saved"])
def test_mmeb_train_rows(tmp_path, fmt):
    path = _write(tmp_path, "OK-VQA", TRAIN_ROWS, fmt)
    items = [item for _, item in load_examples(path, subset="OK-VQA")]
    assert [example_problems(e) for e in items] == [[], []]
    first, second = items
    assert first["task"] == "vqa" and first["dataset"] == "OK-VQA"
    assert first["instruction"] == "Represent the given image with the following question:"
    assert first["query"] == {"text": "What is the man holding?", "images": ["img/a.jpg"]}
    assert first["answer"] == "umbrella" and first["negatives"] == []
    assert second["negatives"] == [{"text": "no", "images": []}]
    assert first["id"].startswith("OK-VQA-") and first["id"] != second["id"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "saved"])
def test_mmeb_eval_rows(tmp_path, fmt):
    path = _write(tmp_path, "evalset", EVAL_ROWS, fmt)
    (ex,) = [item for _, item in load_examples(path, subset="ImageNet-1K")]
    assert example_problems(ex) == []
    assert ex["task"] == "classification"
    assert ex["instruction"] == "Represent the given image for classification"
    assert ex["positive"] == {"text": "tabby cat", "images": []}
    assert [n["text"] for n in ex["negatives"]] == ["dog", "car"]
    assert ex["answer"] == "tabby cat"


def test_ids_are_stable_content_hashes(tmp_path):
    a = [e["id"] for _, e in load_examples(_write(tmp_path, "x", TRAIN_ROWS, "jsonl"), subset="OK-VQA")]
    b = [e["id"] for _, e in load_examples(_write(tmp_path, "y", TRAIN_ROWS[::-1], "jsonl"), subset="OK-VQA")]
    assert a == b[::-1]


@pytest.mark.parametrize(
    "name, task",
    [("OK-VQA", "vqa"), ("ImageNet-1K", "classification"), ("ImageNet_1K", "classification"),
     ("MSCOCO_t2i", "retrieval"), ("RefCOCO", "grounding"), ("MSR-VTT", "video"), ("ViDoRe_docvqa", "visdoc"),
     ("visualnews-i2t", "retrieval")],
)  # fmt: skip
def test_subset_task(name, task):
    assert subset_task(name) == task


def test_subset_table_covers_every_mmeb_v2_image_dataset():
    image_sets = ("ImageNet-1K N24News HatefulMemes VOC2007 SUN397 Place365 ImageNet-A ImageNet-R ObjectNet Country211 "
                  "OK-VQA A-OKVQA DocVQA InfographicsVQA ChartQA Visual7W ScienceQA VizWiz GQA TextVQA VisDial CIRR "
                  "VisualNews_t2i VisualNews_i2t MSCOCO_t2i MSCOCO_i2t NIGHTS WebQA FashionIQ Wiki-SS-NQ OVEN EDIS "
                  "MSCOCO RefCOCO RefCOCO-Matching Visual7W-Pointing").split()  # fmt: skip
    assert set(image_sets) <= set(SUBSET_TASKS)


def test_unknown_subset_is_a_problem_not_a_crash(tmp_path):
    path = _write(tmp_path, "rows", TRAIN_ROWS[:1], "jsonl")
    ((line, item),) = list(load_examples(path, subset="NoSuchSet"))
    assert isinstance(item, BadRow) and line == 1 and "unknown MMEB subset" in item.reason
