import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoTokenizer

from distill.processing import load_processor
from distill.testing.tiny import build_tiny_vlm


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_tiny_vlm_round_trip_and_forward_with_image(tmp_path, family):
    path = build_tiny_vlm(tmp_path / family, family)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = load_processor(path)
    assert model.config.model_type == family
    assert sum(p.numel() for p in model.parameters()) < 300_000

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the circle?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    inputs = processor(text=[text], images=[Image.new("RGB", (56, 56), (255, 0, 0))], return_tensors="pt")
    # 56x56 -> 4x4 patches of 14 -> merged 2x2 -> 4 image tokens
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 4
    logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(processor.tokenizer))
    assert torch.isfinite(logits).all()

    # A second save/load keeps the weights bit-identical.
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForImageTextToText.from_pretrained(tmp_path / "again")
    assert torch.equal(again(**inputs).logits, logits)


def test_tiny_tokenizer_round_trip(tiny_vlm):
    tok = AutoTokenizer.from_pretrained(tiny_vlm)
    text = "<think>three red circles</think> The answer is 3."
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.convert_tokens_to_ids("<|image_pad|>") != tok.unk_token_id
