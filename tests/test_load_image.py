"""load_image: every PIL mode, CLIP's short-side crop, and one clear line naming the file for bad input."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from zsgm.io_utils import MAX_IMAGE_PIXELS, load_image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, width: int, height: int, *, bit_depth: int, color_type: int, rows: bytes | None) -> None:
    """A PNG written by hand, so its header can declare any size (rows None: no pixel data at all)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = png_chunk(b"IHDR", header)
    if rows is not None:
        body += png_chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b""))


def as_u8(x: torch.Tensor) -> np.ndarray:
    """``[1, 3, H, W]`` in [-1, 1] -> ``[H, W, 3]`` uint8 (exact for values that came from uint8)."""
    return ((x[0].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()


# ------------------------------------------------------------------------------------------------ modes


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "1", "P", "CMYK", "YCbCr"])
def test_eight_bit_modes_read_as_pil_converts_them(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    img = rgb.convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "YCbCr") else "x.png")
    if mode == "YCbCr":
        path = tmp_path / "x.jpg"
    img.save(path)
    with Image.open(path) as reread:
        expected = np.asarray(reread.convert("RGBA").convert("RGB") if reread.mode == "P" else reread.convert("RGB"))
    out = load_image(path)
    assert out.shape == (1, 3, 6, 5) and out.dtype == torch.float32
    assert np.array_equal(as_u8(out), expected)


def test_palette_with_transparency_reads_without_warnings(tmp_path, recwarn):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = b"\x00\xff"
    img.save(tmp_path / "p.png", transparency=b"\x00\xff")
    out = load_image(tmp_path / "p.png")
    assert np.array_equal(as_u8(out)[0, 0], [255, 0, 0])
    assert not [w for w in recwarn if "Palette" in str(w.message)]


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 64], [257 * 128, 65535]], dtype=">u2")  # 16-bit big-endian rows
    rows = b"".join(b"\x00" + row.tobytes() for row in values)
    write_png(tmp_path / "g16.png", 2, 2, bit_depth=16, color_type=0, rows=rows)
    out = as_u8(load_image(tmp_path / "g16.png"))
    assert out[:, :, 0].tolist() == [[0, 64], [128, 255]]  # PIL's convert("RGB") would give 0, 255, 255, 255
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 0] == out[:, :, 2]).all()


def test_sixteen_bit_rgb_png_reads(tmp_path):
    values = np.array([[65535, 0, 257 * 100], [0, 257 * 7, 65535]], dtype=">u2")  # one row of 2 pixels
    write_png(tmp_path / "c16.png", 2, 2, bit_depth=16, color_type=2, rows=(b"\x00" + values.tobytes()) * 2)
    out = as_u8(load_image(tmp_path / "c16.png"))
    assert out.shape == (2, 2, 3) and out[0].tolist() == [[255, 0, 100], [0, 7, 255]]


@pytest.mark.parametrize("mode, values, expected", [
    ("I", [[0, 1000], [30000, 65535]], [[0, 4], [117, 255]]),  # above 255: 16-bit range
    ("I", [[0, 10], [128, 255]], [[0, 10], [128, 255]]),  # within 0-255: 8-bit range
    ("F", [[0.0, 0.25], [0.5, 1.0]], [[0, 64], [128, 255]]),  # within [0, 1]
    ("F", [[0.0, 10.0], [128.0, 255.0]], [[0, 10], [128, 255]]),
])
def test_integer_and_float_modes_are_scaled_to_their_range(tmp_path, mode, values, expected):
    img = Image.fromarray(np.array(values, dtype=np.int32 if mode == "I" else np.float32), mode=None)
    assert img.mode == mode
    img.save(tmp_path / "x.tiff")
    assert as_u8(load_image(tmp_path / "x.tiff"))[:, :, 0].tolist() == expected


def test_non_finite_float_pixels_are_refused(tmp_path):
    Image.fromarray(np.array([[0.0, np.nan], [1.0, 0.5]], dtype=np.float32)).save(tmp_path / "nan.tiff")
    with pytest.raises(ValueError, match=r"^image '.*nan\.tiff': holds non-finite pixel values$"):
        load_image(tmp_path / "nan.tiff")


# ------------------------------------------------------------------------------------------------ resizing


def test_size_resizes_the_short_side_and_centre_crops_like_clip(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    T = torchvision.transforms
    rng = np.random.default_rng(1)
    for h, w in [(40, 64), (64, 40), (33, 50), (20, 20)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        img.save(tmp_path / "x.png")
        clip_pil = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32)])(img)
        out = load_image(tmp_path / "x.png", size=32)
        assert out.shape == (1, 3, 32, 32)
        assert np.array_equal(as_u8(out), np.asarray(clip_pil)), (h, w)


def test_squash_keeps_the_former_resize(tmp_path):
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 64, 3), dtype=np.uint8))
    img.save(tmp_path / "x.png")
    out = load_image(tmp_path / "x.png", size=32, fit="squash")
    assert np.array_equal(as_u8(out), np.asarray(img.resize((32, 32), Image.BICUBIC)))


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1)])
def test_size_check_runs_on_the_file_before_any_resize(tmp_path, shape):
    Image.new("RGB", shape[::-1]).save(tmp_path / "tiny.png")
    with pytest.raises(ValueError, match=r"^image '.*tiny\.png': \d+x\d+ pixels is too small"):
        load_image(tmp_path / "tiny.png", size=224)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"^image '.*nope\.png': no such file$"):
        load_image(tmp_path / "nope.png")


def test_directory_is_named_as_such(tmp_path):
    (tmp_path / "styles").mkdir()
    with pytest.raises(ValueError, match=r"^image '.*styles': is a directory, not an image file$"):
        load_image(tmp_path / "styles")


@pytest.mark.parametrize("content", [b"", b"hello, not an image\n", b"\x00" * 100])
def test_non_images_are_refused(tmp_path, content):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(ValueError, match=r"^image '.*x\.png': not an image file"):
        load_image(tmp_path / "x.png")


def test_truncated_image_is_refused(tmp_path):
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"^image '.*t\.png': unreadable image data") as info:
        load_image(tmp_path / "t.png")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("side", [10000, 20000, 100000])
def test_decompression_bombs_are_refused_from_the_header(tmp_path, side):
    # a few hundred bytes declaring side x side pixels: refused before any decoding (no pixel data at all)
    write_png(tmp_path / "bomb.png", side, side, bit_depth=8, color_type=2, rows=None)
    assert (tmp_path / "bomb.png").stat().st_size < 100
    with pytest.raises(ValueError, match=rf"^image '.*bomb\.png': .*{MAX_IMAGE_PIXELS}-pixel limit") as info:
        load_image(tmp_path / "bomb.png", size=224)
    assert "\n" not in str(info.value)


def test_real_large_image_within_the_limit_loads(tmp_path):
    Image.new("L", (4000, 3000), 7).save(tmp_path / "big.png")
    out = load_image(tmp_path / "big.png", size=16)
    assert out.shape == (1, 3, 16, 16) and as_u8(out)[0, 0].tolist() == [7, 7, 7]
