"""clip.device: the CLIP ensemble on its own device, images there and embeddings back (checked on the CPU)."""

from __future__ import annotations

import pytest
import torch

from zsgm.cli_errors import describe_error
from zsgm.loop import adapt
from zsgm.recipe import RecipeError, recipe_from_dict
from zsgm.run import PlacedClip, build_run


def tiny(clip_device=None, steps=2):
    clip = {"models": [{"name": "tiny-random"}]}
    if clip_device is not None:
        clip["device"] = clip_device
    return {
        "source": "photo", "target": "sketch", "generator": {"checkpoint": "tiny-random"}, "clip": clip,
        "optim": {"steps": steps, "batch_size": 2},
        "run": {"device": "cpu", "seed": 1, "sample_every": 0, "checkpoint_every": 0, "n_samples": 2,
                "progress": False},
        "techniques": [{"use": "directional"}],
    }


def test_clip_device_cpu_with_run_device_cpu_runs_as_without_it(tmp_path):
    a = adapt(recipe_from_dict(tiny()), out_dir=tmp_path / "a")
    b = adapt(recipe_from_dict(tiny("cpu")), out_dir=tmp_path / "b")
    assert a.last_losses == b.last_losses
    run = build_run(recipe_from_dict(tiny("cpu")), out_dir=tmp_path / "c")
    assert run.clip_device == run.device == torch.device("cpu")


@pytest.mark.parametrize("name, says", [("cuda:1", "CUDA is not available"), ("tpu9", "clip.device: ")])
def test_a_bad_clip_device_is_a_one_line_recipe_error_naming_clip_device(tmp_path, name, says):
    if name.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RecipeError) as info:
        build_run(recipe_from_dict(tiny(name)), out_dir=tmp_path)
    line = describe_error(info.value)
    assert line.startswith("recipe: clip.device: ") and says in line and "\n" not in line


def test_placed_clip_moves_images_over_and_embeddings_back():
    """A stand-in 'device move' records where tensors go: images reach the inner model, results come back."""
    from zsgm.clip import tiny_random_clip

    inner = tiny_random_clip()
    placed = PlacedClip(inner, torch.device("cpu"))
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    e = placed.encode_image(x)
    assert torch.equal(e, inner.encode_image(x)) and e.device == placed.device
    e.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients flow through the moves
    assert torch.equal(placed.encode_text(["a sketch"]), inner.encode_text(["a sketch"]))
    assert placed.image_size == inner.image_size and placed.model is inner.model  # everything else is the inner's
