"""The one-shot references of the shapes world: varied, and each read by the style judge as its own style."""

from __future__ import annotations

import pytest
from PIL import Image

from zsgm.toy.evaluate import reference_target
from zsgm.toy.references import REFERENCES, write_references
from zsgm.toy.render import ShapeParams, render


def test_each_reference_is_judged_as_its_style_and_they_vary(tmp_path):
    paths = write_references(tmp_path)
    for ref, path in zip(REFERENCES, paths):
        assert reference_target(path) == ref.params.style, ref.name
    sizes = {Image.open(p).size for p in paths}
    assert len(sizes) == len(REFERENCES) and (96, 72) in sizes  # every size differs, one is not square
    for attr in ("style", "kind", "colour"):
        assert len({getattr(r.params, attr) for r in REFERENCES}) >= 3, attr


def test_a_photo_reference_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(render(ShapeParams("circle", "red", 0.5, 0.5, 0.25), size=32)).save(path)
    with pytest.raises(ValueError, match=r"photo\.png: the style judge reads this reference as 'photo'"):
        reference_target(path)
