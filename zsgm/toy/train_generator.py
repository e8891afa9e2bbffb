"""Train the shapes-world generator: the real StyleGAN2 code, 32 px, small channels, fitted to photos.

    python -m zsgm.toy.train_generator --out zsgm/toy/assets/shapes_generator.safetensors --seed 0 --threads 2

Method: supervised regression instead of a GAN. The renderer is parametric, so every latent ``z`` has an
intended photo (:func:`zsgm.toy.latents.params_from_z`, drawn without texture by
:func:`zsgm.toy.latents.render_photo_clean`); samples therefore cover every kind, colour, position and size
by construction, and each sample's ground truth is known. The image loss is L1 + MSE on pixels plus L1 on
image gradients (sharp edges).

Trained end to end from ``z`` the networks stall at a blurred mean blob (measured: after 4000 steps, colour
accuracy 0.23 and kind accuracy 0.28, i.e. chance): the mapping network (equalised lr x 0.01) must learn an
argmax and the synthesis a placement at the same time. So training goes in three stages (see
:func:`train`): the synthesis first learns to draw from a hand-designed code that states the shape plainly
(:func:`zsgm.toy.latents.designed_code`), the mapping then learns ``z -> code`` (cheap: no images), and a
short joint stage lets the synthesis absorb the mapping's residual errors.

The synthesis sees random noise maps during training (as in adaptation), so it learns to ignore them.
An exponential moving average of the weights is what gets saved, with ``latent_avg`` (mean ``w``) for
truncation. Everything is seeded: the same seed, steps, thread count and torch version give the same
weights (on the same CPU kernels). ``--minutes`` caps the wall time: a run that hits it stops early and
says so in the JSON record written next to the weights (``<out>.json``), together with the measured
quality (:func:`zsgm.toy.generator_quality.measure_generator`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from zsgm.generator import Generator, GeneratorArch, save_generator
from zsgm.io_utils import atomic_write_text
from zsgm.toy.latents import LATENT_DIM, designed_code, params_from_z, render_photo_clean

__all__ = ["params_from_z", "make_arch", "train", "main"]

SIZE = 32
DEFAULTS = {
    "channel_max": 64, "n_mlp": 4, "batch": 32, "steps": 4000, "lr": 2e-3, "warmup": 100,
    "final_lr_frac": 0.05, "grad_weight": 1.0, "ema_half_life": 100, "mapping_lr_mult": 250.0,
    "affine_lr_mult": 1.0, "mse_weight": 1.0, "mapping_steps": 30000, "joint_steps": 600, "mapping_batch": 256, "trunc_aug": 0.25,
}


def make_arch(*, channel_max: int = DEFAULTS["channel_max"], n_mlp: int = DEFAULTS["n_mlp"]) -> GeneratorArch:
    """The shapes generator's architecture: rosinality's table at 32 px capped at ``channel_max``."""
    return GeneratorArch.rosinality(SIZE, style_dim=LATENT_DIM, n_mlp=n_mlp, channel_multiplier=2,
                                    channel_max=channel_max)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite differences of x [N, C, H, W] along x ([N, C, H, W-1]) and y ([N, C, H-1, W])."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def regression_loss(img: torch.Tensor, target: torch.Tensor, *, grad_weight: float, mse_weight: float = 0.0) \
        -> torch.Tensor:
    """L1 on pixels + ``mse_weight`` x squared error + ``grad_weight`` x L1 on image gradients (both
    [N, 3, H, W] in [-1, 1])."""
    loss = (img - target).abs().mean()
    if mse_weight > 0:
        loss = loss + mse_weight * (img - target).square().mean()
    if grad_weight > 0:
        for gi, gt in zip(image_gradients(img), image_gradients(target)):
            loss = loss + 0.5 * grad_weight * (gi - gt).abs().mean()
    return loss


def lr_factor(step: int, *, steps: int, warmup: int, final_frac: float) -> float:
    """Linear warm-up then cosine decay to ``final_frac``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return final_frac + (1.0 - final_frac) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _adam(groups: dict[float, list], lr: float) -> torch.optim.Adam:
    return torch.optim.Adam([{"params": ps, "lr": lr * m, "base": lr * m} for m, ps in groups.items()],
                            betas=(0.9, 0.99))


def _set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    for group in opt.param_groups:
        group["lr"] = group["base"] * factor


def train(*, seed: int, steps: int, minutes: float | None, batch: int, lr: float, warmup: int,
          final_lr_frac: float, grad_weight: float, ema_half_life: float, channel_max: int, n_mlp: int,
          mapping_steps: int = DEFAULTS["mapping_steps"], mapping_batch: int = DEFAULTS["mapping_batch"],
          joint_steps: int = DEFAULTS["joint_steps"],
          mapping_lr_mult: float = DEFAULTS["mapping_lr_mult"], affine_lr_mult: float = DEFAULTS["affine_lr_mult"],
          mse_weight: float = DEFAULTS["mse_weight"], trunc_aug: float = DEFAULTS["trunc_aug"],
          progress: bool = True, log_every: int = 200) -> tuple[Generator, dict]:
    """Fit a generator in three stages; returns the EMA generator (with ``latent_avg``) and a record.

    A. ``steps`` steps: the synthesis network learns to draw each latent's intended photo from the
       designed code :func:`zsgm.toy.latents.designed_code` (random noise maps; a random share of the codes
       is pulled towards the mean code as truncation would, with the target unchanged, so truncated
       samples stay clean shapes).
    B. ``mapping_steps`` steps: the mapping network learns ``z -> designed_code(z)`` (MSE; cheap, no images).
    C. ``joint_steps`` steps: the synthesis network (mapping frozen) learns to draw from the codes the
       mapping actually produces, end to end from ``z``, at a quarter of the learning rate.

    Args:
        seed: seeds the initial weights, the latents and the noise maps.
        steps: stage-A steps (they define its learning-rate schedule).
        minutes: wall-time cap of the whole run (None: none); hitting it ends the current stage early
            (recorded as ``stopped_early``).
        batch, lr, warmup, final_lr_frac: batch size, peak Adam learning rate, warm-up steps, final
            learning rate as a fraction of the peak (cosine decay).
        grad_weight: weight of the image-gradient L1 term.
        mapping_steps, joint_steps: lengths of stages B and C; mapping_batch: stage-B batch size.
        mapping_lr_mult: the mapping's learning rate relative to the synthesis's, on top of its equalised-lr
            multiplier ``lr_mlp`` (stage B uses ``lr * mapping_lr_mult``).
        affine_lr_mult: learning-rate multiplier of the synthesis layers' affine maps ``w -> style``.
        mse_weight: weight of a squared-error term (a stronger pull on large errors than L1).
        trunc_aug: share of stage-A codes pulled towards the mean code by a random psi in [0.5, 1].
        ema_half_life: half-life in steps of the weight average that is returned.
        channel_max, n_mlp: architecture (see :func:`make_arch`).
        progress: show a tqdm bar.
        log_every: steps between lines of the loss log kept in the record.
    """
    torch.manual_seed(seed)
    g = Generator(make_arch(channel_max=channel_max, n_mlp=n_mlp))
    g.set_fused_modconv(False)  # same maths, faster on CPU
    rng = torch.Generator().manual_seed(seed + 1)
    mean_code = designed_code(torch.randn((16384, LATENT_DIM), generator=rng)).mean(0)  # [D]
    log, start, cpu_start = [], time.perf_counter(), time.process_time()
    done = {"A": 0, "B": 0, "C": 0}
    ema_beta = 0.5 ** (1.0 / ema_half_life)
    total = steps + mapping_steps + joint_steps
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="shapes generator", unit="step")

    def out_of_time() -> bool:
        return minutes is not None and time.perf_counter() - start > 60.0 * minutes

    def tick(stage: str, value: float, smooth: float | None, f: float) -> float:
        smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
        done[stage] += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{smooth:.4f}", lr=f"{f * lr:.2e}")
        if done[stage] % log_every == 0:
            log.append({"stage": stage, "step": done[stage], "loss": round(smooth, 5),
                        "seconds": round(time.perf_counter() - start, 1)})
        return smooth

    def schedule(opt, n: int):
        """Yield the learning-rate factor of each of ``n`` steps (set on ``opt``) until time runs out."""
        for step in range(n):
            if out_of_time():
                return
            f = lr_factor(step, steps=n, warmup=warmup, final_frac=final_lr_frac)
            _set_lr(opt, f)
            yield f

    @torch.no_grad()
    def average_into(g_avg) -> None:
        for pe, p in zip(g_avg.parameters(), g.parameters()):
            pe.lerp_(p, 1.0 - ema_beta)

    def image_step(opt, ws, target, noise) -> float:
        img = g.synthesis(ws, noise=noise)
        loss = regression_loss(img, target, grad_weight=grad_weight, mse_weight=mse_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    # -- stage A: synthesis from the designed code
    synth = {}
    for name, p in g.named_parameters():
        if not name.startswith("style."):
            synth.setdefault(affine_lr_mult if ".modulation." in name else 1.0, []).append(p)
    opt = _adam(synth, lr)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    smooth = None
    for f in schedule(opt, steps):
        z = torch.randn((batch, LATENT_DIM), generator=rng)  # [B, D]
        code = designed_code(z)  # [B, D]
        psi = torch.rand((batch, 1), generator=rng) * 0.5 + 0.5
        pulled = torch.rand((batch, 1), generator=rng) < trunc_aug
        code = torch.where(pulled, mean_code + psi * (code - mean_code), code)
        ws = code[:, None, :].repeat(1, g.n_latent, 1)  # [B, L, D]
        value = image_step(opt, ws, render_photo_clean(params_from_z(z), size=SIZE),
                           g.make_noise(batch, mode="random", rng=rng))
        average_into(g_ema)
        smooth = tick("A", value, smooth, f)
    with torch.no_grad():  # continue from the averaged synthesis
        for p, pe in zip(g.parameters(), g_ema.parameters()):
            p.copy_(pe)

    # -- stage B: the mapping learns z -> designed code
    opt = _adam({mapping_lr_mult: list(g.style.parameters())}, lr)
    smooth = None
    for f in schedule(opt, mapping_steps):
        z = torch.randn((mapping_batch, LATENT_DIM), generator=rng)
        loss = (g.mapping(z) - designed_code(z)).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        smooth = tick("B", float(loss.detach()), smooth, f)

    # -- stage C: end to end from z
    g.style.requires_grad_(False)
    opt = _adam(synth, lr * 0.25)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    smooth = None
    for f in schedule(opt, joint_steps):
        z = torch.randn((batch, LATENT_DIM), generator=rng)
        ws = g.mapping(z)[:, None, :].repeat(1, g.n_latent, 1)
        value = image_step(opt, ws, render_photo_clean(params_from_z(z), size=SIZE),
                           g.make_noise(batch, mode="random", rng=rng))
        average_into(g_ema)
        smooth = tick("C", value, smooth, f)
    g.style.requires_grad_(True)
    if bar is not None:
        bar.close()
    if joint_steps == 0 or done["C"] == 0:
        g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    for b_ema, b in zip(g_ema.buffers(), g.buffers()):
        b_ema.copy_(b)
    g_ema.set_fused_modconv(True)
    g_ema.latent_avg = g_ema.mean_latent(8192, generator=torch.Generator().manual_seed(seed + 2))[0]
    record = {
        "seed": seed, "steps": done, "planned_steps": {"A": steps, "B": mapping_steps, "C": joint_steps},
        "stopped_early": sum(done.values()) < total,
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
        "final_loss": round(smooth, 5) if smooth is not None else None,
        "loss_log": log,
        "hyperparameters": {"batch": batch, "lr": lr, "warmup": warmup, "final_lr_frac": final_lr_frac,
                            "grad_weight": grad_weight, "mse_weight": mse_weight, "ema_half_life": ema_half_life,
                            "mapping_lr_mult": mapping_lr_mult, "affine_lr_mult": affine_lr_mult, "mapping_batch": mapping_batch,
                            "trunc_aug": trunc_aug, "optimizer": "Adam(betas=(0.9, 0.99))",
                            "loss": "L1 + mse_weight * MSE + grad_weight * L1(image gradients)",
                            "stages": "A synthesis from designed_code, B mapping -> designed_code, C joint",
                            "noise": "random"},
        "arch": g_ema.arch.to_dict(),
        "param_count": sum(p.numel() for p in g_ema.parameters()),
        "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        "latent_map": "zsgm.toy.latents.params_from_z",
    }
    return g_ema, record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zsgm.toy.train_generator", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output .safetensors (a .json record is written beside it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="stage A steps")
    ap.add_argument("--minutes", type=float, default=None, help="wall-time cap; stops early when reached")
    ap.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    ap.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    ap.add_argument("--final-lr-frac", type=float, default=DEFAULTS["final_lr_frac"])
    ap.add_argument("--grad-weight", type=float, default=DEFAULTS["grad_weight"])
    ap.add_argument("--mapping-lr-mult", type=float, default=DEFAULTS["mapping_lr_mult"])
    ap.add_argument("--affine-lr-mult", type=float, default=DEFAULTS["affine_lr_mult"])
    ap.add_argument("--mse-weight", type=float, default=DEFAULTS["mse_weight"])
    ap.add_argument("--mapping-steps", type=int, default=DEFAULTS["mapping_steps"], help="stage B steps")
    ap.add_argument("--mapping-batch", type=int, default=DEFAULTS["mapping_batch"])
    ap.add_argument("--joint-steps", type=int, default=DEFAULTS["joint_steps"], help="stage C steps")
    ap.add_argument("--trunc-aug", type=float, default=DEFAULTS["trunc_aug"])
    ap.add_argument("--ema-half-life", type=float, default=DEFAULTS["ema_half_life"])
    ap.add_argument("--channel-max", type=int, default=DEFAULTS["channel_max"])
    ap.add_argument("--n-mlp", type=int, default=DEFAULTS["n_mlp"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest on a shared 2-core machine: 2 threads oversubscribe it)")
    ap.add_argument("--eval-samples", type=int, default=256, help="samples for the quality record (0: skip)")
    ap.add_argument("--grid", default=None, help="also save a sample grid PNG here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    g, record = train(seed=args.seed, steps=args.steps, minutes=args.minutes, batch=args.batch, lr=args.lr,
                      warmup=args.warmup, final_lr_frac=args.final_lr_frac, grad_weight=args.grad_weight,
                      ema_half_life=args.ema_half_life, channel_max=args.channel_max, n_mlp=args.n_mlp,
                      mapping_lr_mult=args.mapping_lr_mult, affine_lr_mult=args.affine_lr_mult, mse_weight=args.mse_weight,
                      mapping_steps=args.mapping_steps, mapping_batch=args.mapping_batch, joint_steps=args.joint_steps, trunc_aug=args.trunc_aug,
                      progress=not args.no_progress)
    record["command"] = "python -m zsgm.toy.train_generator " + " ".join(argv if argv is not None else
                                                                           __import__("sys").argv[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_generator(g, out)
    if args.eval_samples > 0:
        from zsgm.toy.generator_quality import measure_generator

        record["metrics"] = measure_generator(g, n=args.eval_samples, grid=args.grid)
    record["file_bytes"] = out.stat().st_size
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "loss_log"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
