"""Building a run: a CLIP that cannot load names its recipe entry."""

import pytest

from zsgm.clip import ClipLoadError
from zsgm.recipe import recipe_from_dict
from zsgm.run import build_run


def test_a_clip_load_failure_names_the_recipe_entry(tmp_path):
    junk = tmp_path / "clip.safetensors"
    junk.write_bytes(b"not weights")
    recipe = recipe_from_dict({
        "source": "photo", "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}, {"name": "ViT-B-32", "pretrained": str(junk)}]},
        "run": {"device": "cpu"},
        "techniques": [{"use": "directional"}],
    })
    with pytest.raises(ClipLoadError) as info:
        build_run(recipe, out_dir=tmp_path / "run")
    message = str(info.value)
    assert message.startswith("clip.models[1]: ") and str(junk) in message and "\n" not in message
