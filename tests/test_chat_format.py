"""The student's chat format: one definition for export, the train-time tokenization and `reason`."""

import pytest
import torch
from trl.chat_template_utils import get_training_chat_template
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from distill.chat_format import assistant_text, load_images, student_prompt, tokenize_messages, user_text
from distill.export import ExportConfig, export
from distill.io import write_jsonl_atomic
from distill.processing import load_processor
from distill.reason_hf import Student
from distill.testing.traces import kept_demo_rows
from distill.train.data import load_export

PIXELS = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}
ROW = {"instruction": " Represent the image: ", "query": {"text": "What color?\n", "images": ["a.png", "b.png"]}}


# A target-side trace describes the positive: the user turn is the target instruction + the positive, never the query.
DOC = {"instruction": "Find the page:", "query": {"text": "2019 revenue?", "images": []},
       "target_instruction": "Represent the page:", "positive": {"text": "", "images": ["page.png"]}}  # fmt: skip


@pytest.mark.parametrize(
    "side, user, images",
    [("query", "Find the page:\n2019 revenue?", []), ("target", "Represent the page:", ["page.png"])],
)
def test_student_prompt_by_side(side, user, images):
    got = student_prompt(DOC, side=side)
    assert (got.messages, got.images) == ([{"role": "user", "content": user}], images)


@pytest.mark.parametrize(
    "row, kw, messages, images",
    [
        (ROW, {}, [{"role": "user", "content": "Represent the image:\nWhat color?"}], ["a.png", "b.png"]),
        ({"instruction": "", "query": {"text": "caption", "images": []}}, {},
         [{"role": "user", "content": "caption"}], []),
        ({"query": {"text": "", "images": ["a.png"]}, "instruction": "Find it:"}, {"system_prompt": "Think."},
         [{"role": "system", "content": "Think."}, {"role": "user", "content": "Find it:"}], ["a.png"]),
        (ROW, {"trace": {"think": " a ", "final": "b\n"}},
         [{"role": "user", "content": "Represent the image:\nWhat color?"},
          {"role": "assistant", "content": "<think>a</think>\nb"}], ["a.png", "b.png"]),
    ],
)  # fmt: skip
def test_student_prompt(row, kw, messages, images):
    got = student_prompt(row, **kw)
    assert got.messages == messages and got.images == images


def test_parts_and_unknown_side():
    assert user_text(ROW) == "Represent the image:\nWhat color?"
    assert assistant_text({"think": None, "final": "x"}) == "<think></think>\nx"
    with pytest.raises(ValueError, match="unknown side 'sideways'"):
        student_prompt(ROW, side="sideways")


def test_trained_prompt_ids_equal_the_reason_prompt_ids(tiny_vlm, demo_dir, tmp_path):
    """A row exported and collated for training (TRL's vision collator with the training chat template, assistant-only
    loss) has, before its first supervised token, exactly the token ids and pixels `reason` asks the student with."""
    rows = kept_demo_rows(str(demo_dir / "train"))
    rows = [next(r for r in rows if r["query"]["images"]), next(r for r in rows if not r["query"]["images"])]
    write_jsonl_atomic(tmp_path / "kept.jsonl", rows)
    export(ExportConfig(input=str(tmp_path / "kept.jsonl"), output=str(tmp_path / "export"), image_root=str(demo_dir),
                        **PIXELS))  # fmt: skip
    processor = load_processor(tiny_vlm, **PIXELS)
    student = Student(str(tiny_vlm), **PIXELS)  # `distill reason --backend hf`'s student
    collator = DataCollatorForVisionLanguageModeling(
        processor, assistant_only_loss=True, chat_template=get_training_chat_template(processor)
    )
    dataset = load_export(str(tmp_path / "export"))
    batch = collator([dict(r) for r in dataset])
    for i, src in enumerate(rows):
        first_supervised = int((batch["labels"][i] != -100).nonzero()[0])
        trained = batch["input_ids"][i][:first_supervised].tolist()
        prompt = student_prompt(src)  # what `distill reason` sends: no assistant turn, generation prompt on
        asked = student.encode(prompt.messages, load_images(prompt.images, str(demo_dir), **PIXELS))
        assert asked.input_ids == trained
        assert processor.tokenizer.decode(trained).endswith("<|im_start|>assistant\n")
    image_row = tokenize_messages(processor, student_prompt(rows[0]).messages,
                                  load_images(rows[0]["query"]["images"], str(demo_dir), **PIXELS))  # fmt: skip
    assert torch.equal(torch.as_tensor(image_row["pixel_values"]), batch["pixel_values"])
