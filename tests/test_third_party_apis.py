"""Third-party libraries through their public APIs (issue 21): datasketch's LSH bands, datasets' card YAML and the
tokenizer's saved processor class give what the private calls they replace gave. DeepSpeed's `__compatible_ops__` has
no public equivalent: `distill.train.config.skip_deepspeed_shm_comm` isolates it and says why."""

import json

import pytest


@pytest.mark.parametrize("threshold, num_perm, bands", [(0.8, 128, (9, 13)), (0.5, 64, (14, 4)), (0.7, 128, (14, 9))])
def test_lsh_bands_are_datasketchs_optimum(threshold, num_perm, bands):
    from distill.scoring.dedup import band_params

    assert band_params(threshold, num_perm) == bands


def test_card_yaml_is_what_datasets_writes_for_the_same_data(tmp_path):
    """`push_to_hub`'s own card metadata for a dataset equals ours for the same features, split and sizes."""
    import yaml
    from datasets import Dataset, Features, Image, List, Value
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    from distill.hub import dataset_card, write_parquet_shards

    features = Features({"images": List(Image()), "id": Value("string")})
    ds = Dataset.from_dict({"images": [[]] * 3, "id": ["a", "b", "c"]}, features=features)
    shards = write_parquet_shards(ds, tmp_path)
    ours = dataset_card([shards], "body", ["x"]).data.to_dict()["dataset_info"]
    theirs = DatasetCardData()
    info = ds.info.copy()
    info.splits, info.download_size, info.dataset_size = None, shards.download_size, shards.num_bytes
    DatasetInfosDict({"default": info}).to_dataset_card_data(theirs)
    assert ours["features"] == yaml.safe_load(yaml.safe_dump(theirs.to_dict()["dataset_info"]["features"]))
    assert ours["splits"] == [{"name": "train", "num_bytes": shards.num_bytes, "num_examples": 3}]


def test_fallback_processor_saves_the_stock_class_in_the_tokenizer_config(tiny_vlm, tmp_path):
    from transformers import AutoTokenizer

    from distill.processing import ImageOnlyQwen2VLProcessor, load_processor

    proc = load_processor(tiny_vlm)
    if not isinstance(proc, ImageOnlyQwen2VLProcessor):
        pytest.skip("torchvision imports here: the stock processor is used, no fallback to save")
    proc.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert saved["processor_class"] == "Qwen2VLProcessor"
    assert AutoTokenizer.from_pretrained(tmp_path)("hi")["input_ids"]  # still a loadable tokenizer config
