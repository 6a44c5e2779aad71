"""Label-mask audit (in process: collators only, no training)."""

import pytest
from trl.chat_template_utils import get_training_chat_template
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from distill.export import ExportConfig, export
from distill.io import write_jsonl_atomic
from distill.processing import load_processor
from distill.testing.traces import kept_demo_rows
from distill.train.audit import LabelMaskError, audit
from distill.train.data import load_export, preflight


@pytest.fixture(scope="module")
def setup(tiny_vlm, demo_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    write_jsonl_atomic(tmp / "kept.jsonl", kept_demo_rows(str(demo_dir / "train")))
    export(ExportConfig(input=str(tmp / "kept.jsonl"), output=str(tmp / "export"), image_root=str(demo_dir),
                        max_pixels=28 * 28 * 16))  # fmt: skip
    processor = load_processor(tiny_vlm)
    ds = load_export(str(tmp / "export"))
    # one image row, one text-only (ShapesT2I) row, and a row with a system message, batched together (padding)
    rows = [ds[0], next(r for r in ds if not r["images"])]
    rows.append({**ds[1], "messages": [{"role": "system", "content": "Think first."}, *ds[1]["messages"]]})
    return processor, get_training_chat_template(processor), rows, ds


def _collator(processor, template, assistant_only=True):
    return DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=assistant_only, chat_template=template)


def test_audit_passes_and_supervised_text_is_the_assistant_turn(setup):
    processor, template, rows, _ = setup
    report = audit(_collator(processor, template), processor, rows, template, batch_size=3)
    frac = report["supervised_fraction_per_role"]
    assert frac["assistant"] == 1.0
    assert all(frac[r] == 0.0 for r in ("system", "user", "image", "pad", "assistant_header"))
    assert report["tokens_per_role"]["pad"] > 0 and report["tokens_per_role"]["image"] > 0
    for text, row in zip(report["examples"], rows, strict=True):
        assert text["supervised_text"] == row["messages"][-1]["content"] + "<|im_end|>\n"


def _drop_last_label(collator):
    def collate(examples):
        batch = collator(examples)
        for row in batch["labels"]:
            row[(row != -100).nonzero()[-1]] = -100
        return batch

    return collate


def _label_first_token(collator):
    def collate(examples):
        batch = collator(examples)
        batch["labels"][:, 0] = batch["input_ids"][:, 0]
        return batch

    return collate


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p, t: _collator(p, t, assistant_only=False), r"supervise non-assistant tokens \{.*'user'"),
        (lambda p, t: _label_first_token(_collator(p, t)), r"non-assistant tokens \{'system': 1\}"),
        (lambda p, t: _drop_last_label(_collator(p, t)), r"supervised text .* != assistant turn"),
    ],
)
def test_audit_aborts_on_a_bad_mask(setup, make, match):
    processor, template, rows, _ = setup
    with pytest.raises(LabelMaskError, match=match):
        audit(make(processor, template), processor, rows, template, batch_size=3)


def test_preflight_drops_long_rows_and_counts_them(setup):
    processor, _, _, ds = setup
    full, lengths, _ = preflight(ds, processor, max_length=None)
    cut = sorted(lengths)[len(lengths) // 2]
    kept, kept_lengths, report = preflight(ds, processor, max_length=cut)
    assert report["dropped_over_max_length"] == sum(n > cut for n in lengths) > 0
    assert len(kept) == len(kept_lengths) == len(ds) - report["dropped_over_max_length"]
    assert max(kept_lengths) <= cut and report["text_only_rows"] == 12
