"""`zsgm adapt --reference FILE`: a reference of any size or mode is handled, or refused in one line before
anything loads (zsgm.io_utils.load_image decides; the command checks it up front)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import zsgm.loop
from zsgm.cli import USER_ERROR_EXIT, main
from zsgm.io_utils import load_image

from cli_output import one_error_line  # tests/cli_output.py

TINY = ["--generator", "tiny-random", "--clip", "tiny-random", "--no-progress"]


def u8(x: torch.Tensor) -> np.ndarray:
    """``[1, 3, H, W]`` in [-1, 1] -> ``[H, W, 3]`` uint8."""
    return ((x[0].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()


def _save(img: Image.Image, path, **kwargs):
    img.save(path, **kwargs)
    return path


# Each builder writes one file into tmp_path and returns (path, expected [H, W, 3] uint8 of load_image).
def rgba(d):
    arr = np.zeros((3, 4, 4), np.uint8)
    arr[..., :3] = (200, 100, 50)
    arr[..., 3] = 0  # fully transparent: the colour under the alpha is kept (alpha dropped, as CLIP does)
    arr[0, 0] = (10, 20, 30, 255)
    expected = arr[..., :3].copy()
    return _save(Image.fromarray(arr, "RGBA"), d / "rgba.png"), expected


def la(d):
    arr = np.stack([np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, np.full((3, 4), 128, np.uint8)], -1)
    return _save(Image.fromarray(arr, "LA"), d / "la.png"), np.repeat(arr[..., :1], 3, -1)


def palette_transparent(d):
    img = Image.new("P", (3, 2), 1)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    expected = np.zeros((2, 3, 3), np.uint8)
    expected[..., 1] = 255
    expected[0, 0] = 0
    return _save(img, d / "p.png", transparency=0), expected


def grey(d):
    arr = np.array([[0, 64], [128, 255]], np.uint8)
    return _save(Image.fromarray(arr, "L"), d / "l.png"), np.repeat(arr[..., None], 3, -1)


SIXTEEN = np.array([[0, 257 * 64], [257 * 128, 65535]])
SIXTEEN_U8 = np.repeat(np.array([[0, 64], [128, 255]], np.uint8)[..., None], 3, -1)


def i16(d):
    img = Image.fromarray(SIXTEEN.astype("<u2"))
    assert img.mode == "I;16"
    return _save(img, d / "i16.png"), SIXTEEN_U8  # scaled by 65535, not clipped at 255


def i16b(d):
    img = Image.fromarray(SIXTEEN.astype(">u2"))
    assert img.mode == "I;16B"
    path = _save(img, d / "i16b.tiff")
    with Image.open(path) as reread:
        assert reread.mode == "I;16B"
    return path, SIXTEEN_U8


def int32(d):
    img = Image.fromarray(SIXTEEN.astype(np.int32))
    assert img.mode == "I"
    return _save(img, d / "i.tiff"), SIXTEEN_U8


def float32(d):
    img = Image.fromarray(np.array([[0.0, 0.25], [0.5, 1.0]], np.float32))
    assert img.mode == "F"
    return _save(img, d / "f.tiff"), SIXTEEN_U8  # [0, 1] floats: 0, 64, 128, 255


def exif_rotated_jpeg(d):
    img = Image.new("RGB", (8, 4), (255, 255, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # stored sideways; viewers rotate it 90 degrees clockwise
    path = _save(img, d / "phone.jpg", exif=exif, quality=100)
    return path, np.full((8, 4, 3), 255, np.uint8)  # read upright: 8 high, 4 wide


def two_by_two(d):
    arr = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [9, 9, 9]]], np.uint8)
    return _save(Image.fromarray(arr), d / "tiny.png"), arr


HANDLED = [rgba, la, palette_transparent, grey, i16, i16b, int32, float32, exif_rotated_jpeg, two_by_two]


def one_by_one(d):
    return _save(Image.new("RGB", (1, 1), (1, 2, 3)), d / "one.png"), "1x1 pixels is too small"


def huge(d):
    path = _save(Image.new("1", (10000, 10000)), d / "huge.png")  # 10 kB on disk, 10^8 pixels declared
    return path, "10000x10000 pixels is larger than the 67108864-pixel limit"


def text_renamed(d):
    (d / "notes.png").write_text("this is a text file, renamed\n")
    return d / "notes.png", "not an image file"


def truncated(d):
    arr = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    data_path = _save(Image.fromarray(arr), d / "cut.png")
    data = data_path.read_bytes()
    data_path.write_bytes(data[: len(data) // 2])
    return data_path, "unreadable image data"


def empty(d):
    (d / "empty.png").write_bytes(b"")
    return d / "empty.png", "not an image file"


def lab(d):
    return _save(Image.new("LAB", (4, 4)), d / "lab.tiff"), "colour mode LAB is not supported"


REFUSED = [one_by_one, huge, text_renamed, truncated, empty, lab]


@pytest.fixture
def reader_recipe(tmp_path):
    """A recipe whose techniques read target images (NADA's image-target)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text('source = "photo"\n[[techniques]]\nuse = "directional"\n[[techniques]]\nuse = "image-target"\n')
    return recipe


class ReachedTheRun(Exception):
    pass


@pytest.fixture
def reached(monkeypatch):
    """Stop the CLI where the run would start, keeping the recipe it built."""
    seen = []

    def stop(recipe, **kwargs):
        seen.append(recipe)
        raise ReachedTheRun

    monkeypatch.setattr(zsgm.loop, "adapt", stop)
    return seen


@pytest.fixture
def nothing_may_run(monkeypatch):
    monkeypatch.setattr(zsgm.loop, "adapt", lambda *a, **k: pytest.fail("the run started"))


@pytest.mark.parametrize("build", HANDLED, ids=lambda f: f.__name__)
def test_handled_references_read_as_rgb(tmp_path, build):
    path, expected = build(tmp_path)
    out = load_image(path)
    assert out.dtype == torch.float32 and out.shape == (1, 3, *expected.shape[:2])
    assert float(out.min()) >= -1 and float(out.max()) <= 1
    got = u8(out)
    if path.suffix == ".jpg":
        assert np.abs(got.astype(int) - expected).max() <= 2
    else:
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("build", HANDLED, ids=lambda f: f.__name__)
def test_handled_references_become_the_recipes_target_images(tmp_path, build, reader_recipe, reached):
    path, _ = build(tmp_path)
    with pytest.raises(ReachedTheRun):
        main(["adapt", str(reader_recipe), "--reference", str(path), *TINY, "--out", str(tmp_path / "o")])
    assert reached[0].target_images == [str(path)]


@pytest.mark.parametrize("build", REFUSED, ids=lambda f: f.__name__)
def test_refused_references_are_one_line_naming_the_file(tmp_path, build):
    path, words = build(tmp_path)
    with pytest.raises(ValueError) as info:
        load_image(path, size=224)
    message = str(info.value)
    assert message.startswith(f"image {str(path)!r}: ") and words in message and "\n" not in message


@pytest.mark.parametrize("build", REFUSED, ids=lambda f: f.__name__)
def test_refused_references_stop_adapt_before_anything_loads(tmp_path, capsys, build, reader_recipe,
                                                             nothing_may_run):
    path, words = build(tmp_path)
    code = main(["adapt", str(reader_recipe), "--reference", str(path), *TINY, "--out", str(tmp_path / "o")])
    assert code == USER_ERROR_EXIT
    line = one_error_line(capsys)
    assert line.startswith(f"zsgm: error: --reference: image {str(path)!r}: ") and words in line
    assert not (tmp_path / "o").exists()


def test_a_huge_reference_is_refused_from_the_header(tmp_path, monkeypatch):
    path, _ = huge(tmp_path)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels decoded"))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="larger than"):
        load_image(path)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("make, words", [(lambda p: None, "no such file"),
                                         (lambda p: p.mkdir(), "is a directory, not an image file")])
def test_missing_reference_is_named_as_the_option(tmp_path, capsys, reader_recipe, nothing_may_run, make, words):
    path = tmp_path / "ref.png"
    make(path)
    code = main(["adapt", str(reader_recipe), "--reference", str(path), *TINY, "--out", str(tmp_path / "o")])
    assert code == USER_ERROR_EXIT
    assert one_error_line(capsys) == f"zsgm: error: --reference {path}: {words}"


def test_reference_and_target_image_together_are_refused(tmp_path, capsys, reader_recipe, nothing_may_run):
    path, _ = two_by_two(tmp_path)
    code = main(["adapt", str(reader_recipe), "--reference", str(path), "--target-image", str(path), *TINY,
                 "--out", str(tmp_path / "o")])
    assert code == USER_ERROR_EXIT
    assert "--reference and --target-image both set the recipe's target images; give one" in one_error_line(capsys)


def test_reference_with_a_recipe_that_ignores_it_is_refused_naming_the_option(tmp_path, capsys, nothing_may_run):
    path, _ = two_by_two(tmp_path)
    code = main(["adapt", "--preset", "nada", "--target", "sketch", "--reference", str(path), *TINY,
                 "--out", str(tmp_path / "o")])
    assert code == USER_ERROR_EXIT
    line = one_error_line(capsys)
    assert line.startswith("zsgm: error: --reference: no technique of this recipe reads target images")
    assert line.endswith("or drop --reference")


def test_a_reference_alone_is_a_target(tmp_path, reader_recipe, reached):
    """No --target text: the reference image is the target (the recipe has target_images)."""
    path, _ = grey(tmp_path)
    with pytest.raises(ReachedTheRun):
        main(["adapt", str(reader_recipe), "--reference", str(path), *TINY, "--out", str(tmp_path / "o")])
    assert reached[0].target is None and reached[0].target_images == [str(path)]
