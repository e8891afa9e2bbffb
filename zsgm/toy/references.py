"""Reference images for one-shot runs on the shapes world: renders in non-source styles.

Each reference differs from the others in style, kind, colour, position and image size (one is not square), so
a one-shot method is tried on what a user would hand it rather than on one convenient image.

    python -m zsgm.toy.references --outdir refs/      # writes one PNG per reference and lists them
"""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs
import numpy as np
from PIL import Image

from zsgm.io_utils import atomic_write_bytes
from zsgm.toy.render import ShapeParams, render


@attrs.define(frozen=True)
class Reference:
    """One reference: the shape, the side it is rendered at and an optional crop to ``width`` x ``height``."""

    name: str
    params: ShapeParams
    size: int
    crop: tuple[int, int] | None = None  # (width, height), centred


REFERENCES = (
    Reference("sketch-circle-red-32", ShapeParams("circle", "red", 0.5, 0.5, 0.28, style="sketch", seed=11), 32),
    Reference("night-square-blue-64", ShapeParams("square", "blue", 0.40, 0.60, 0.24, style="night", seed=12), 64),
    Reference("pastel-triangle-green-256",
              ShapeParams("triangle", "green", 0.58, 0.45, 0.30, style="pastel", seed=13), 256),
    Reference("sketch-diamond-yellow-96x72",
              ShapeParams("diamond", "yellow", 0.45, 0.5, 0.22, style="sketch", seed=14), 96, crop=(96, 72)),
    Reference("night-circle-yellow-128", ShapeParams("circle", "yellow", 0.62, 0.38, 0.22, style="night", seed=15),
              128),
    Reference("pastel-square-red-48", ShapeParams("square", "red", 0.5, 0.55, 0.26, style="pastel", seed=16), 48),
)


def reference_pixels(ref: Reference) -> np.ndarray:
    """uint8 ``[H, W, 3]`` of a reference (rendered at ``size``, then centre-cropped if asked)."""
    img = render(ref.params, size=ref.size)
    if ref.crop is not None:
        w, h = ref.crop
        top, left = (ref.size - h) // 2, (ref.size - w) // 2
        img = img[top:top + h, left:left + w]
    return img


def write_references(outdir: str | Path, refs=REFERENCES) -> list[Path]:
    """Write each reference as ``<outdir>/<name>.png`` (atomically); returns the paths."""
    import io

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ref in refs:
        buf = io.BytesIO()
        Image.fromarray(reference_pixels(ref)).save(buf, format="PNG")
        path = outdir / f"{ref.name}.png"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir", required=True)
    args = parser.parse_args(argv)
    for path in write_references(args.outdir):
        print(path)


if __name__ == "__main__":
    main()
