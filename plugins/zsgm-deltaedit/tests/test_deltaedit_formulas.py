"""DeltaEdit's inference and training formulas against plain-torch versions of the released code (read in
Yueming6568/DeltaEdit utils/map_tool.py, scripts/inference.py, datasets/train_dataset.py, scripts/train.py and
StyleCLIP global_torch/SingleChannel.py; rewritten here, not copied), on small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsgm.clip import IMAGENET_TEMPLATES
from zsgm.generator.stylespace import style_layout, synthesis_from_styles, ws_to_styles
from zsgm_deltaedit.codes import build_codes
from zsgm_deltaedit.edit import edit_images, edit_styles, layer_mask, relevance_mask, text_delta
from zsgm_deltaedit.mapper import DeltaMapper
from zsgm_deltaedit.recipe import mapper_preset
from zsgm_deltaedit.relevance import relevance_from_features
from zsgm_deltaedit.train import MapperTask


# ------------------------------------------------------------------------- the released code, in plain torch


def original_get_dt(encode_text, target, neutral, templates):
    """map_tool.GetDt: per class, unit template features, their mean renormalised; target minus neutral."""
    rows = []
    for name in (target, neutral):
        feats = encode_text([t.format(name) for t in templates])
        feats = feats / feats.norm(dim=-1, keepdim=True)
        mean = feats.mean(dim=0)
        rows.append(mean / mean.norm())
    weights = torch.stack(rows, dim=1).t()
    return weights[0] - weights[1]


def original_inference(net, latent_s, c_src, dt, fs3, threshold):
    """inference.py: GetBoundary on the unnormalised dt, the test dataset's [c ; c] with dt normalised into its
    second half, improved_ds zeroing the unselected channels, latent_s + delta."""
    select = np.abs(np.dot(fs3, dt.numpy())) < threshold
    dt = dt / dt.norm(dim=-1, keepdim=True).float().clamp(min=1e-5)
    c1 = c_src / c_src.norm(dim=-1, keepdim=True).float()
    delta_c = torch.cat([c1, c1], dim=1)
    d = c_src.shape[1]
    delta_c[0, d:] = dt
    fake = net(latent_s, delta_c)
    ds = fake[0].clone()
    ds[torch.from_numpy(select)] = 0
    return latent_s + ds.unsqueeze(0)


def original_get_fs(fs):
    """SingleChannel.GetFs on features [C, M, 2, D] (index 0: -alpha, 1: +alpha)."""
    fs1 = fs / np.linalg.norm(fs, axis=-1)[:, :, :, None]
    fs2 = fs1[:, :, 1, :] - fs1[:, :, 0, :]
    fs3 = fs2 / np.linalg.norm(fs2, axis=-1)[:, :, None]
    fs3 = fs3.mean(axis=1)
    return fs3 / np.linalg.norm(fs3, axis=-1)[:, None]


def original_pair_loss(net, s1, c1, s2, c2):
    """train_dataset.__getitem__ (batched) and train.py's loss with weights 1."""
    c1 = c1 / c1.norm(dim=-1, keepdim=True).float()
    c2 = c2 / c2.norm(dim=-1, keepdim=True).float()
    delta_s = s2 - s1
    delta_c = c2 - c1
    delta_c = delta_c / delta_c.norm(dim=-1, keepdim=True).float().clamp(min=1e-5)
    delta_c = torch.cat([c1, delta_c], dim=1)
    fake = net(s1, delta_c)
    l2 = torch.nn.MSELoss()(fake, delta_s)
    cos = 1 - torch.mean(torch.nn.CosineSimilarity(dim=-1)(fake, delta_s))
    return l2 + cos


# ------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize("templates", [IMAGENET_TEMPLATES[:5], None])
def test_text_delta_is_map_tool_get_dt(tiny_clip, templates):
    raw = lambda texts: tiny_clip.model.encode_text(tiny_clip.tokenize(texts)).float()  # noqa: E731
    with torch.no_grad():
        want = original_get_dt(raw, "face with blue eyes", "face", templates or IMAGENET_TEMPLATES)
    got = text_delta(tiny_clip, "face", "face with blue eyes", templates=templates)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert 0.01 < float(got.norm()) < 2  # unnormalised


def test_gated_edit_is_the_released_inference(tiny_generator, tiny_clip):
    torch.manual_seed(0)
    layout = style_layout(tiny_generator)
    d = tiny_clip.embed_dim
    net = DeltaMapper.for_layout(layout, clip_dim=d).eval()
    s = torch.randn(1, layout[-1].stop)
    c_src = torch.randn(1, d)
    dt = torch.randn(d) * 0.1
    fs3 = torch.nn.functional.normalize(torch.randn(layout[-1].stop, d), dim=1)
    theta = float((fs3 @ dt).abs().median())  # about half the channels gated off
    with torch.no_grad():
        want = original_inference(net, s, c_src, dt, fs3.numpy(), theta)
        mask = relevance_mask(fs3, dt, theta)
        got = s + edit_styles(net, s, c_src, dt, mask)
    assert 0 < int(mask.sum()) < mask.numel()
    torch.testing.assert_close(got, want)


def test_relevance_reduction_is_styleclips_get_fs():
    rng = np.random.RandomState(0)
    fs = rng.randn(6, 4, 2, 8).astype(np.float32) + 0.3  # [C, M, (-, +), D], unnormalised CLIP features
    want = original_get_fs(fs.astype(np.float64))
    got = relevance_from_features(torch.from_numpy(fs[:, :, 0]), torch.from_numpy(fs[:, :, 1]))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_a_training_step_is_the_released_pair_loss(tmp_path, tiny_generator, tiny_clip):
    build_codes(tmp_path, tiny_generator, tiny_clip, samples=12, chunk_size=5, progress=False)
    recipe = mapper_preset("deltaedit", {"train": {"batch": 6}})
    widths = [layer.channels for layer in style_layout(tiny_generator)]
    task = MapperTask(recipe, tmp_path, widths=widths, clip_dim=tiny_clip.embed_dim)
    task.setup(tmp_path, torch.device("cpu"))
    net = task.build(torch.device("cpu"))
    i, j = task.pairs(torch.Generator().manual_seed(5))
    rows_i, rows_j = task.reader.take(i), task.reader.take(j)
    want = original_pair_loss(net, rows_i["s"], rows_i["c"], rows_j["s"], rows_j["c"])
    got = task.loss(net, 0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(got["total"], want)
    assert isinstance(task.make_optimizer(net), torch.optim.Adam) and recipe.train.lr == 0.5


def test_strength_zero_is_the_unedited_image_exactly(tiny_generator, tiny_clip):
    g = tiny_generator
    torch.manual_seed(1)
    layout = style_layout(g)
    net = DeltaMapper.for_layout(layout, clip_dim=tiny_clip.embed_dim).eval()
    relevance = torch.nn.functional.normalize(torch.randn(layout[-1].stop, tiny_clip.embed_dim), dim=1)
    ws = g.mapping(torch.randn(3, g.arch.style_dim))[:, None].repeat(1, g.n_latent, 1).detach()
    noise = g.make_noise(3, mode="random", rng=torch.Generator().manual_seed(0))
    out = edit_images(g, ws, mapper=net, relevance=relevance, clip_model=tiny_clip, neutral="red", target="blue",
                      theta=0.0, strengths=(0.0, 1.0), noise=noise)
    with torch.no_grad():
        unedited = g.synthesis(ws, noise=noise)
    assert out.shape == (2, 3, 3, 16, 16)
    assert torch.equal(out[0], unedited)
    assert not torch.equal(out[1], unedited)
    # a threshold no channel reaches: nothing moves at any strength
    gated = edit_images(g, ws, mapper=net, relevance=relevance, clip_model=tiny_clip, neutral="red",
                        target="blue", theta=10.0, strengths=(2.0,), noise=noise)
    assert torch.equal(gated[0], unedited)


def test_edit_images_decodes_through_stylespace(tiny_generator, tiny_clip):
    """The edit at strength k is the S-space decode of s + k * gated delta (ToRGBs reading W+)."""
    g = tiny_generator
    torch.manual_seed(2)
    layout = style_layout(g)
    net = DeltaMapper.for_layout(layout, clip_dim=tiny_clip.embed_dim).eval()
    relevance = torch.nn.functional.normalize(torch.randn(layout[-1].stop, tiny_clip.embed_dim), dim=1)
    ws = torch.randn(2, g.n_latent, g.arch.style_dim)
    noise = g.make_noise(2, mode="const")
    with torch.no_grad():
        s = ws_to_styles(g, ws)
        source = synthesis_from_styles(g, s, ws, noise=noise)
        dt = text_delta(tiny_clip, "photo", "sketch")
        ds = edit_styles(net, s, tiny_clip.encode_image(source), dt, relevance_mask(relevance, dt, 0.02))
        want = synthesis_from_styles(g, s + 1.5 * ds, ws, noise=noise)
    got = edit_images(g, ws, mapper=net, relevance=relevance, clip_model=tiny_clip, neutral="photo",
                      target="sketch", theta=0.02, strengths=(1.5,), noise=noise)
    torch.testing.assert_close(got[0], want)


def test_layer_mask_restricts_the_edit_to_style_layers(tiny_generator, tiny_clip):
    g = tiny_generator
    layout = style_layout(g)
    mask = layer_mask(g, [1, 3])
    assert mask.shape == (40,) and int(mask.sum()) == 16
    assert mask[layout[1].offset:layout[1].stop].all() and mask[layout[3].offset:layout[3].stop].all()
    assert bool(layer_mask(g, None).all())
    with pytest.raises(ValueError, match=r"style layers \[5\]: this generator has 5 style layers"):
        layer_mask(g, [0, 5])
    torch.manual_seed(3)
    net = DeltaMapper.for_layout(layout, clip_dim=tiny_clip.embed_dim).eval()
    relevance = torch.nn.functional.normalize(torch.randn(40, tiny_clip.embed_dim), dim=1)
    ws = torch.randn(2, g.n_latent, g.arch.style_dim)
    kw = dict(mapper=net, relevance=relevance, clip_model=tiny_clip, neutral="red", target="blue", theta=0.0,
              strengths=(1.0,), noise=g.make_noise(2, mode="const"))
    every = edit_images(g, ws, layers=list(range(5)), **kw)
    assert torch.equal(every, edit_images(g, ws, **kw))
    assert not torch.equal(every, edit_images(g, ws, layers=[4], **kw))
