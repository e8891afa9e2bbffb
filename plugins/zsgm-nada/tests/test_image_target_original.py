"""image-target against the released NADA code's semantics (CLIPLoss.compute_img2img_direction).

NADA encodes each style image with CLIP's standard PIL preprocessing (torchvision ``Resize(n_px, bicubic)`` of
the short side, ``CenterCrop(n_px)``, RGB, ``ToTensor``, ``Normalize``), averages the unit embeddings, and
subtracts the mean unit embedding of generated source images. Written here from those semantics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from zsgm.recipe import RecipeError, recipe_from_dict
from zsgm.run import build_run
from zsgm.step import random_noise, sample_ws

T = pytest.importorskip("torchvision.transforms")

N_SOURCE = 4


def base(techniques, **extra):
    data = {
        "source": "photo", "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "optim": {"steps": 1, "batch_size": 2, "lr": 0.01},
        "run": {"sample_every": 0, "checkpoint_every": 1, "n_samples": 2, "progress": False},
        "techniques": techniques,
    }
    data.update(extra)
    return data


def style_files(tmp_path) -> list[str]:
    """A landscape 64x40 and a portrait 30x52 style image with structure across the whole frame."""
    rng = np.random.default_rng(0)
    files = []
    for i, (w, h) in enumerate([(64, 40), (30, 52)]):
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([255 * xx / w, 255 * yy / h, rng.integers(0, 256, (h, w))], axis=-1).astype(np.uint8)
        path = tmp_path / f"style{i}.png"
        Image.fromarray(arr).save(path)
        files.append(str(path))
    return files


def clip_pil_embedding(model, path: str) -> torch.Tensor:
    """``[D]`` unit embedding of a style file the way the released code computes it."""
    size = model.image_size
    preprocess = T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
        lambda image: image.convert("RGB"), T.ToTensor(),
        T.Normalize(model.mean.flatten().tolist(), model.std.flatten().tolist()),
    ])
    with Image.open(path) as image, torch.no_grad():
        e = model.model.encode_image(preprocess(image)[None]).float()[0]
    return e / e.norm()


def test_image_target_direction_matches_the_released_preprocessing(tmp_path):
    files = style_files(tmp_path)
    r = recipe_from_dict(base([{"use": "directional"}, {"use": "image-target", "n_source": N_SOURCE}],
                              target=None, target_images=files))
    run = build_run(r, out_dir=tmp_path / "run")
    technique = run.techniques[1]
    technique.zsgm_setup(run=run)
    model = run.clip_models[0]
    with torch.no_grad():  # the source side as zsgm draws it (what is under test is the style side)
        rng = run.rng(0, "image-target")
        ws = sample_ws(run, N_SOURCE, rng)
        src = run.g_source.synthesis(ws, noise=random_noise(run.g_source, N_SOURCE, rng, run.device))
        e_src = model.encode_image(src).mean(0)
    e_style = torch.stack([clip_pil_embedding(model, f) for f in files]).mean(0)
    expected = F.normalize(e_style - e_src, dim=-1)
    assert torch.allclose(technique.directions_cache[0], expected, atol=1e-5)


def test_check_refuses_image_target_without_any_style_image():
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.images: 'image-target' needs style images"):
        recipe_from_dict(base([{"use": "directional"}, {"use": "image-target"}]))


def test_check_refuses_own_images_that_are_not_images(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.images\[0\]: image '.*notes\.png': not an image"):
        recipe_from_dict(base([{"use": "directional"},
                               {"use": "image-target", "images": [str(tmp_path / "notes.png")]}]))


def test_check_refuses_global_without_any_text(tmp_path):
    files = style_files(tmp_path)
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.text: 'global' needs a target text"):
        recipe_from_dict(base([{"use": "image-target"}, {"use": "global"}, {"use": "directional"}],
                              target=None, target_images=files))
    # with its own text it is accepted
    recipe_from_dict(base([{"use": "image-target"}, {"use": "global", "text": "a sketch"}, {"use": "directional"}],
                          target=None, target_images=files))
