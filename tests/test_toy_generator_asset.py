"""The shipped shapes-world generator: loads by name, draws photos of the shape each latent asks for."""

from collections import Counter

import numpy as np
import pytest
import torch

from zsgm.toy.assets import shapes_generator_path
from zsgm.toy.generator_quality import analytic_masks, kind_at_geometry
from zsgm.toy.judges import classify_colour, classify_style, mask_iou
from zsgm.toy.latents import LATENT_DIM, param_arrays_from_z, params_from_z, render_photo_clean
from zsgm.toy.masks import foreground_mask_from_image
from zsgm.toy.render import BORDER_MARGIN, COLOURS, KINDS, RADIUS_RANGE, foreground_mask, render

N_SAMPLES = 64


def test_params_from_z_is_deterministic_and_covers_the_world():
    z = torch.randn(4000, LATENT_DIM, generator=torch.Generator().manual_seed(0))
    ps = params_from_z(z)
    assert ps == params_from_z(z.numpy())  # torch or numpy, same answer
    assert params_from_z(z[:3]) == ps[:3]  # per-sample, batch independent
    kinds, colours = Counter(p.kind for p in ps), Counter(p.colour for p in ps)
    assert set(kinds) == set(KINDS) and min(kinds.values()) > 850  # ~1000 each
    assert set(colours) == set(COLOURS) and min(colours.values()) > 850
    r = np.array([p.radius for p in ps])
    assert RADIUS_RANGE[0] <= r.min() < RADIUS_RANGE[0] + 0.01 and RADIUS_RANGE[1] - 0.01 < r.max() <= RADIUS_RANGE[1]
    lo = min(p.cx - p.radius for p in ps)
    assert lo >= BORDER_MARGIN - 1e-9 and lo < BORDER_MARGIN + 0.01
    # the free coordinates carry nothing
    z2 = z.clone()
    z2[:, 11:] = torch.randn(4000, LATENT_DIM - 11)
    assert params_from_z(z2) == ps
    # kind follows argmax of z[0:4]
    z3 = torch.zeros(1, LATENT_DIM)
    z3[0, 2] = 3.0
    assert params_from_z(z3)[0].kind == KINDS[2]
    assert param_arrays_from_z(z3)["kind"][0] == 2


def test_clean_photo_equals_render_up_to_texture():
    z = torch.randn(8, LATENT_DIM, generator=torch.Generator().manual_seed(1))
    ps = params_from_z(z)
    clean = render_photo_clean(ps)  # [8, 3, 32, 32]
    ref = torch.from_numpy(np.stack([render(p) for p in ps])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    diff = (clean - ref).abs().amax(1) * 0.5  # [8, 32, 32] in [0, 1] units
    deep = torch.from_numpy(np.stack([foreground_mask(p) for p in ps]))
    deep = deep & deep.roll(1, 1) & deep.roll(-1, 1) & deep.roll(1, 2) & deep.roll(-1, 2)  # away from the edge
    assert diff[deep].max() <= 0.5 / 255 + 1e-6  # fill: identical up to uint8 rounding
    assert diff.max() < 0.12 and diff[~deep].mean() > 0.002  # background: only the texture differs


@pytest.fixture(scope="module")
def shapes_generator():
    from zsgm.plugins import get_registry

    if not shapes_generator_path().is_file():
        pytest.fail(f"missing asset {shapes_generator_path()}")
    g, info = get_registry().generators.get("shapes").load(device="cpu")
    return g, info


@pytest.fixture(scope="module")
def samples(shapes_generator):
    g, _ = shapes_generator
    rng = torch.Generator().manual_seed(7)
    z = torch.randn(N_SAMPLES, LATENT_DIM, generator=rng)
    with torch.no_grad():
        img = g(z, noise_mode="random", rng=rng)
    return z, img


def test_asset_loads_by_name_with_its_record(shapes_generator):
    g, info = shapes_generator
    assert g.arch.size == 32 and g.arch.style_dim == LATENT_DIM
    assert g.latent_avg is not None and g.latent_avg.shape == (LATENT_DIM,)
    assert info["record"]["seed"] == 0 and info["record"]["param_count"] == sum(p.numel() for p in g.parameters())
    assert shapes_generator_path().stat().st_size <= 5 * 2**20


def test_samples_are_photos_of_the_intended_shapes(samples):
    z, img = samples
    assert img.shape == (N_SAMPLES, 3, 32, 32) and torch.isfinite(img).all()
    styles = classify_style(img)
    assert np.mean([s == "photo" for s in styles]) >= 0.9, Counter(styles)
    params = params_from_z(z)
    mask = foreground_mask_from_image(img)
    iou = mask_iou(mask, analytic_masks(params, size=32))
    assert iou.mean() >= 0.8, iou
    colours = classify_colour(img)
    assert np.mean([c == p.colour for c, p in zip(colours, params)]) >= 0.9
    kinds = kind_at_geometry(mask, params)
    assert np.mean([k == p.kind for k, p in zip(kinds, params)]) >= 0.9
    assert set(kinds) == set(KINDS) and set(colours) >= set(COLOURS)


def test_truncation_keeps_photos(shapes_generator, samples):
    g, _ = shapes_generator
    z, img = samples
    with torch.no_grad():
        img7 = g(z, truncation=0.7, noise_mode="const")
    styles = classify_style(img7)
    assert np.mean([s == "photo" for s in styles]) >= 0.85, Counter(styles)
    # truncation pulls towards the mean: a different image, but the same shape mostly
    assert (img7 - img).abs().mean() > 0.01
