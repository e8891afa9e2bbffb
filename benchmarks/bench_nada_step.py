"""The whole NADA training step (FFHQ-config generator, CLIP ViT-B/32 + ViT-B/16 with random weights, batch
2) with reference ops, reference ops under torch.compile, and the CuPy kernels, in one run.

    python benchmarks/bench_nada_step.py --device cuda --size 1024 --steps 20

Prints median seconds per step, ratios against the reference, and peak GPU memory. CPU runs are possible at
small sizes (``--size 64 --clip tiny-random``) to check the script itself.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from zsgm.clip import ClipModelSpec, load_clip_model, text_direction
from zsgm.generator import Generator, GeneratorArch
from zsgm.technique import directional_loss


def make_step(g_src, g_tgt, clips, directions, batch, device):
    params = [p for n, p in g_tgt.named_parameters() if not n.startswith("style.")]
    opt = torch.optim.Adam(params, lr=0.0016, betas=(0.0, 0.99 ** 0.8))

    def step():
        z = torch.randn(batch, g_src.arch.style_dim, device=device)
        with torch.no_grad():
            w = g_src.mapping(z)
            ws = w[:, None].repeat(1, g_src.n_latent, 1)
            noise = g_src.make_noise(batch, mode="random")
            x_s = g_src.synthesis(ws, noise=noise)
        x_t = g_tgt.synthesis(ws, noise=noise)
        loss = 0.0
        for model, d in zip(clips, directions):
            with torch.no_grad():
                e_s = model.encode_image(x_s)
            loss = loss + directional_loss(e_s, model.encode_image(x_t), d)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure(step, steps, device) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--clip", default="ViT-B-32,ViT-B-16")
    parser.add_argument("--modes", nargs="+", default=["ref", "compile", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    clips = [load_clip_model(ClipModelSpec(name=n), device=device) for n in args.clip.split(",")]
    directions = [text_direction(m, "photo", "sketch", templates=["a {}."]).to(device) for m in clips]
    base = Generator(GeneratorArch.rosinality(args.size)).to(device)
    results = {}
    for mode in args.modes:
        if mode == "cuda" and device.type != "cuda":
            continue
        g_src = copy.deepcopy(base).eval()
        g_tgt = copy.deepcopy(base)
        for g in (g_src, g_tgt):
            g.set_impl("cuda" if mode == "cuda" else "ref")
        if mode == "compile":
            g_src.synthesis = torch.compile(g_src.synthesis)
            g_tgt.synthesis = torch.compile(g_tgt.synthesis)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = measure(make_step(g_src, g_tgt, clips, directions, args.batch, device), args.steps, device)
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
        results[mode] = seconds
        print(f"{mode:8s} {seconds * 1e3:9.1f} ms/step  peak {peak:6.2f} GiB  "
              f"ref/this {results.get('ref', float('nan')) / seconds:5.2f}")


if __name__ == "__main__":
    main()
