"""optim.grad_checkpointing: the generator's blocks recomputed in backward give the same gradients."""

from __future__ import annotations

import torch

from zsgm.builtin_plugin import tiny_random_generator
from zsgm.recipe import recipe_from_dict
from zsgm.run import build_run


def grads(checkpointing: bool):
    g, _ = tiny_random_generator()
    g.grad_checkpointing = checkpointing
    rng = torch.Generator().manual_seed(0)
    ws = torch.randn(3, g.n_latent, g.arch.style_dim, generator=rng).requires_grad_(True)
    noise = g.make_noise(3, rng=rng)
    images = g.synthesis(ws, noise=noise)
    (images * torch.linspace(-1, 1, images.numel()).reshape(images.shape)).sum().backward()
    return images.detach(), ws.grad, {n: p.grad for n, p in g.named_parameters() if p.grad is not None}


def test_checkpointed_synthesis_gives_the_same_images_and_gradients():
    img_a, ws_a, a = grads(False)
    img_b, ws_b, b = grads(True)
    assert torch.equal(img_a, img_b)
    torch.testing.assert_close(ws_a, ws_b, rtol=1e-6, atol=1e-8)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-8, msg=name)


def test_checkpointing_saves_fewer_tensors_for_backward():
    def saved_bytes(checkpointing: bool) -> int:
        g, _ = tiny_random_generator()
        g.grad_checkpointing = checkpointing
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        ws = torch.randn(2, g.n_latent, g.arch.style_dim)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            g.synthesis(ws, noise_mode="const")
        return total

    assert saved_bytes(True) < saved_bytes(False) / 2


def test_the_recipe_option_reaches_the_target_generator_only(tmp_path):
    data = {"source": "photo", "target": "sketch", "generator": {"checkpoint": "tiny-random"},
            "clip": {"models": [{"name": "tiny-random"}]}, "optim": {"grad_checkpointing": True, "ema_decay": 0.9},
            "techniques": [{"use": "directional"}]}
    run = build_run(recipe_from_dict(data), out_dir=tmp_path)
    assert run.g_target.grad_checkpointing and not run.g_ema.grad_checkpointing
    assert not run.g_source.grad_checkpointing
