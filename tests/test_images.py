import pytest
from PIL import Image

from distill.images import ImageError, open_image, resize_to_budget, resolve_image, target_size


def _png(path, size=(40, 30), colour=(255, 0, 0)):
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.mark.parametrize(
    "rel",
    ["../outside.png", "a/../../outside.png", "/etc/passwd"],
)
def test_resolve_refuses_escape(tmp_path, rel):
    with pytest.raises(ImageError, match="escapes|absolute"):
        resolve_image(tmp_path, rel)


def test_resolve_refuses_symlink_escape(tmp_path):
    outside = _png(tmp_path / "outside.png")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.png").symlink_to(outside)
    with pytest.raises(ImageError, match="escapes"):
        resolve_image(root, "link.png")


def test_resolve_inside(tmp_path):
    (tmp_path / "a").mkdir()
    assert resolve_image(tmp_path, "a/x.png") == (tmp_path / "a" / "x.png").resolve()


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "zero-byte"),
        (b"not an image at all", "corrupt"),
        (None, "not found"),
    ],
)
def test_open_image_bad(tmp_path, content, reason):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        open_image(path)


def test_open_image_truncated_png(tmp_path):
    good = _png(tmp_path / "good.png", size=(64, 64))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageError, match="corrupt"):
        open_image(tmp_path / "cut.png")


def test_open_image_limits(tmp_path):
    path = _png(tmp_path / "x.png", size=(100, 100))
    with pytest.raises(ImageError, match="decompression bomb"):
        open_image(path, max_pixels=100 * 100 - 1)
    with pytest.raises(ImageError, match="MiB limit"):
        open_image(path, max_bytes=10)


def test_open_image_exif_transpose_and_rgb(tmp_path):
    img = Image.new("L", (40, 20), 128)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif)
    out = open_image(tmp_path / "r.jpg")
    assert out.mode == "RGB"
    assert out.size == (20, 40)  # width and height swapped by the EXIF orientation


@pytest.mark.parametrize(
    "hw, min_pixels, max_pixels, expected",
    [
        # 56x56 fits the budget already: unchanged
        ((56, 56), 28 * 28 * 4, 28 * 28 * 16, (56, 56)),
        # 300x200 = 60000 px > 12544 max: scaled by sqrt(60000/12544)=2.187 -> floor(137.2/28)*28=112, floor(91.4/28)*28=84
        ((300, 200), 28 * 28 * 4, 28 * 28 * 16, (112, 84)),
        # 20x20 = 400 px < 3136 min: scaled up by sqrt(3136/400)=2.8 -> ceil(56/28)*28 = 56
        ((20, 20), 28 * 28 * 4, 28 * 28 * 16, (56, 56)),
    ],
)
def test_target_size(hw, min_pixels, max_pixels, expected):
    assert target_size(*hw, min_pixels, max_pixels) == expected


def test_resize_to_budget_multiples_of_28():
    img = Image.new("RGB", (333, 129))
    out = resize_to_budget(img, 28 * 28 * 4, 28 * 28 * 64)
    assert out.width % 28 == 0 and out.height % 28 == 0
    assert out.width * out.height <= 28 * 28 * 64
