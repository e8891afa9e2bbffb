"""Train the shapes-world discriminator: real photo renders against the shipped generator's samples.

    python -m zsgm.toy.train_discriminator --out zsgm/toy/assets/shapes_discriminator.safetensors --seed 0 --threads 1

(1 thread: on a shared 2-core machine 2 torch threads oversubscribe it and run several times slower.)

The shapes generator was fitted by regression (:mod:`zsgm.toy.train_generator`), not as a GAN, so it comes
without a discriminator; the one-shot techniques (issue 15) need one. This trains the StyleGAN2 residual
discriminator of :func:`zsgm.generator.discriminator.discriminator_arch_for` (the generator's 32-px table,
capped at ``--channel-max`` = 16 channels: 21k parameters, a 44 KB fp16 file) with the non-saturating logistic loss
``softplus(-D(real)) + softplus(D(fake))`` plus the lazy R1 penalty ``r1 / 2 * |grad_x D(real)|^2`` (every ``--r1-every`` steps, scaled by it),
Adam ``betas (0, 0.99)`` as StyleGAN2. Real images are textured photo renders (:func:`zsgm.toy.render.render`
of random :func:`zsgm.toy.render.sample_params`); fakes are the shipped generator's samples at psi 1 with random
noise. Both pools are drawn once up front (the generator is frozen); batches draw from them, with random
horizontal flips. The record (``<out>.json``) holds the command, the time, the loss log, the accuracy on a
held-out pool (renders and samples never seen in training) measured on the saved (fp16) weights, and the torch
version.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zsgm.generator.discriminator import Discriminator, discriminator_arch_for, random_discriminator
from zsgm.io_utils import atomic_write_text

DEFAULTS = {"steps": 1800, "batch": 16, "lr": 5e-3, "r1": 0.01, "r1_every": 4, "pool": 1024, "held_out": 512,
            "channel_max": 16}


def real_pool(n: int, *, seed: int) -> torch.Tensor:
    """``n`` textured photo renders, float32 [n, 3, 32, 32] in [-1, 1]."""
    from zsgm.toy.render import render_batch, sample_params

    return render_batch(sample_params(n, rng=np.random.default_rng(seed), styles=("photo",)), size=32)


@torch.no_grad()
def fake_pool(generator, n: int, *, seed: int, chunk: int = 256) -> torch.Tensor:
    """``n`` generator samples (z ~ N(0, I), psi 1, random noise), [n, 3, S, S]."""
    rng = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, chunk):
        z = torch.randn((min(chunk, n - i), generator.arch.style_dim), generator=rng)
        out.append(generator(z, noise_mode="random", rng=rng))
    return torch.cat(out)


@torch.no_grad()
def score(d: Discriminator, images: torch.Tensor, *, chunk: int = 256) -> torch.Tensor:
    """Logits [N] (chunks of a multiple of the stddev group)."""
    return torch.cat([d(images[i:i + chunk]) for i in range(0, len(images), chunk)])[:, 0]


def accuracy(d: Discriminator, real: torch.Tensor, fake: torch.Tensor) -> dict:
    """Held-out numbers: share of renders with logit > 0, of samples with logit < 0, their mean, the mean
    logits, and the share of (render, sample) pairs where the render scores higher (AUC)."""
    lr, lf = score(d, real), score(d, fake)
    auc = float((lr[:, None] > lf[None, :]).float().mean())
    acc_r, acc_f = float((lr > 0).float().mean()), float((lf < 0).float().mean())
    return {"accuracy": round((acc_r + acc_f) / 2, 4), "real_above_zero": round(acc_r, 4),
            "fake_below_zero": round(acc_f, 4), "auc": round(auc, 4), "mean_logit_real": round(float(lr.mean()), 4),
            "mean_logit_fake": round(float(lf.mean()), 4), "n_real": len(real), "n_fake": len(fake)}


def train(generator, *, seed: int, steps: int, batch: int, lr: float, r1: float, pool: int, channel_max: int,
          r1_every: int = 4,
          log_every: int = 50, progress: bool = True) -> tuple[Discriminator, dict]:
    """Train a discriminator for ``generator``; returns it (eval mode) and a record (loss log, seconds).

    ``progress`` prints each loss-log line to stderr."""
    start = time.perf_counter()
    real, fake = real_pool(pool, seed=seed + 1), fake_pool(generator, pool, seed=seed + 2)
    pools_seconds = time.perf_counter() - start
    d = random_discriminator(discriminator_arch_for(generator, channel_max=channel_max), seed=seed)
    opt = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.0, 0.99))
    rng = torch.Generator().manual_seed(seed + 3)
    log, smooth = [], None

    def draw(images: torch.Tensor) -> torch.Tensor:
        x = images[torch.randint(len(images), (batch,), generator=rng)]
        flip = torch.rand((batch, 1, 1, 1), generator=rng) < 0.5
        return torch.where(flip, x.flip(3), x)

    for step in range(steps):
        xr, xf = draw(real).requires_grad_(True), draw(fake)
        lr_, lf_ = d(xr), d(xf)
        loss = F.softplus(-lr_).mean() + F.softplus(lf_).mean()
        total = loss
        if r1 > 0 and step % r1_every == 0:  # lazy R1 (StyleGAN2): every r1_every steps, scaled by it
            (grad,) = torch.autograd.grad(lr_.sum(), xr, create_graph=True)
            total = total + r1 / 2 * r1_every * grad.square().sum(dim=(1, 2, 3)).mean()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        value = float(loss.detach())
        smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
        if (step + 1) % log_every == 0:
            log.append({"step": step + 1, "logistic_loss": round(smooth, 4),
                        "seconds": round(time.perf_counter() - start, 1)})
            if progress:
                print(json.dumps(log[-1]), file=sys.stderr, flush=True)
    record = {"seed": seed, "steps": steps, "seconds": round(time.perf_counter() - start, 1),
              "pools_seconds": round(pools_seconds, 1), "loss_log": log,
              "hyperparameters": {"batch": batch, "lr": lr, "r1": r1, "r1_every": r1_every, "pool": pool, "channel_max": channel_max,
                                  "optimizer": "Adam(betas=(0, 0.99))",
                                  "loss": "softplus(-D(real)) + softplus(D(fake)) + r1/2 |grad D(real)|^2",
                                  "real": "zsgm.toy.render photo renders (textured), random h-flip",
                                  "fake": "shapes generator, psi 1, random noise, random h-flip"}}
    return d.eval(), record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zsgm.toy.train_discriminator", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output .safetensors (a .json record is written beside it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    ap.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    ap.add_argument("--r1", type=float, default=DEFAULTS["r1"], help="R1 weight (gamma)")
    ap.add_argument("--r1-every", type=int, default=DEFAULTS["r1_every"], help="lazy R1 interval (steps)")
    ap.add_argument("--pool", type=int, default=DEFAULTS["pool"], help="renders and samples drawn for training")
    ap.add_argument("--held-out", type=int, default=DEFAULTS["held_out"], help="renders and samples for the record")
    ap.add_argument("--channel-max", type=int, default=DEFAULTS["channel_max"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fp32", action="store_true", help="save float32 weights (default float16)")
    args = ap.parse_args(argv)
    if args.batch % 4:
        ap.error("--batch must be a multiple of 4 (the minibatch-stddev group)")

    from zsgm.generator.discriminator_files import load_discriminator, save_discriminator
    from zsgm.toy.assets import load_shapes_generator

    torch.set_num_threads(args.threads)
    generator, _ = load_shapes_generator()
    d, record = train(generator, seed=args.seed, steps=args.steps, batch=args.batch, lr=args.lr, r1=args.r1,
                      pool=args.pool, channel_max=args.channel_max, r1_every=args.r1_every)
    out = Path(args.out)
    save_discriminator(d, out, dtype=torch.float32 if args.fp32 else torch.float16)
    saved, _ = load_discriminator(out)  # the numbers are those of the shipped (rounded) weights
    held_real = real_pool(args.held_out, seed=args.seed + 1001)
    held_fake = fake_pool(generator, args.held_out, seed=args.seed + 1002)
    record.update({
        "command": "python -m zsgm.toy.train_discriminator " + " ".join(argv if argv is not None else sys.argv[1:]),
        "held_out": accuracy(saved, held_real, held_fake), "arch": d.arch.to_dict(),
        "param_count": sum(p.numel() for p in d.parameters()), "dtype": "float32" if args.fp32 else "float16",
        "file_bytes": out.stat().st_size, "torch_version": torch.__version__, "threads": torch.get_num_threads(),
    })
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "loss_log"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
