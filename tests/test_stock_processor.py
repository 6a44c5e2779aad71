"""The stock Qwen2-VL path, where torchvision imports (CI: requirements-torchvision.lock, `make test-torchvision`):
stock `AutoProcessor` loads the tiny Qwen2-VL that the kit saves, `load_processor` returns it rather than the fallback,
and the fallback (PIL image processor + the numpy video processor) gives the stock processors' grids and pixels.
Beside the CPU torch pin torchvision does not import and these tests are skipped (docs/environment.md)."""

import pytest
import torch
from PIL import Image

from distill.testing.tiny import TINY_MAX_PIXELS, TINY_MIN_PIXELS, torchvision_imports

pytestmark = [pytest.mark.torchvision,
              pytest.mark.skipif(not torchvision_imports(), reason="torchvision does not import beside this torch")]  # fmt: skip


def _frames(n: int) -> list:
    # 84x56 is a multiple of 28 inside the tiny budget, so neither path resizes: pixels must agree to float error
    return [Image.new("RGB", (56, 84), (20 * i, 200 - 10 * i, 30 + 5 * i)) for i in range(n)]


def test_stock_auto_processor_loads_the_kit_checkpoint_and_load_processor_uses_it(tiny_vlm):
    from transformers import AutoProcessor, Qwen2VLProcessor

    from distill.processing import ImageOnlyQwen2VLProcessor, load_processor

    stock = AutoProcessor.from_pretrained(tiny_vlm)
    assert type(stock) is Qwen2VLProcessor
    assert stock.video_processor.__class__.__name__ == "Qwen2VLVideoProcessor"
    ours = load_processor(tiny_vlm, min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)
    assert type(ours) is Qwen2VLProcessor and not isinstance(ours, ImageOnlyQwen2VLProcessor)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}]
    text = stock.apply_chat_template(messages, add_generation_prompt=True)
    out = stock(text=[text], images=[_frames(1)[0]], return_tensors="pt")
    grid = out["image_grid_thw"][0].tolist()
    assert grid == [1, 6, 4] and (out["input_ids"] == stock.image_token_id).sum() == 6 * 4 // 4


def test_the_fallback_gives_the_stock_grids_and_pixels(tiny_vlm):
    """What the fallback stands in for on CPU-torch machines: the same patches and token counts as stock."""
    from transformers import AutoProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from distill.video_processing import PilQwen2VLVideoProcessor

    stock = AutoProcessor.from_pretrained(tiny_vlm)
    pil_images = Qwen2VLImageProcessorPil.from_pretrained(tiny_vlm)
    image = _frames(1)[0]
    a, b = stock.image_processor(images=[image], return_tensors="pt"), pil_images(images=[image], return_tensors="pt")
    assert a["image_grid_thw"].tolist() == b["image_grid_thw"].tolist()
    assert torch.allclose(a["pixel_values"], b["pixel_values"], atol=1e-4)

    numpy_videos = PilQwen2VLVideoProcessor.like(pil_images)
    for n in (2, 3, 8):  # 3: an odd frame count is padded by repeating the last frame, as stock does
        video = _frames(n)
        a = stock.video_processor(videos=[video], do_sample_frames=False, return_tensors="pt")
        b = numpy_videos([video], return_tensors="pt")
        assert a["video_grid_thw"].tolist() == b["video_grid_thw"].tolist() == [[-(-n // 2), 6, 4]]
        assert torch.allclose(a["pixel_values_videos"], b["pixel_values_videos"], atol=1e-4), n
        assert numpy_videos.num_video_tokens(n, 84, 56) == a["video_grid_thw"].prod().item() // 4
