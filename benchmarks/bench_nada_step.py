"""One StyleGAN-NADA training step, timed: 1024 px config-f generator, batch 2, CLIP ViT-B/32 + ViT-B/16 with
random weights (open_clip architectures, no download), for the reference ops, the CuPy kernels and the
fast-step options (zsgm.fast_step), with peak GPU memory with and without layer freezing.

    python benchmarks/bench_nada_step.py                       # all modes on CUDA, 1024 px, batch 2
    python benchmarks/bench_nada_step.py --modes ref kernels --steps 20
    python benchmarks/bench_nada_step.py --smoke               # CPU, 16 px, tiny random CLIPs (checks the script)

The step is NADA's: the frozen source and the trainable target synthesise the same W+ codes and noise, each
CLIP encodes both image sets, the loss is the sum of the directional CLIP losses against a fixed text
direction, Adam (lr 0.002, betas (0, 0.99)) updates the target's trainable synthesis parameters.
Layer freezing ("+freeze" modes) trains only the layers NADA picks for its k most-changed W+ slots; the
benchmark fixes them to k = ``--freeze-k`` coarse slots (conv1, to_rgb1, convs.0..k-3), the usual outcome of
NADA's probe, so the step's cost does not depend on a probe. Modes:

    ref                     reference ops, float32, TF32 off
    kernels                 CuPy kernels, float32, TF32 off
    kernels+tf32            + TF32 matmuls and convolutions
    kernels+tf32+bf16clip   + CLIP forwards under bf16 autocast
    tf32+bf16               generator and CLIP under bf16 autocast (generator on the reference ops)
    compile+tf32            torch.compile of synthesis and encode_image (reference ops), TF32
    <mode>+freeze           the same with layer freezing

Prints one row per mode: median ms/step over ``--steps`` steps after ``--warmup`` steps, speed-up over
"ref", peak memory (``torch.cuda.max_memory_allocated``). ``--json PATH`` writes the rows as they come
(a time limit still leaves the finished modes).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time

import torch

from zsgm import fast_step as fs
from zsgm.clip import ClipModelSpec, load_clip_model, text_direction
from zsgm.generator import Generator, GeneratorArch
from zsgm.technique import directional_loss

ALL_MODES = ["ref", "kernels", "kernels+tf32", "kernels+tf32+bf16clip", "tf32+bf16", "compile+tf32",
             "ref+freeze", "kernels+tf32+bf16clip+freeze"]
MODE_OPTIONS = {
    "ref": ("ref", fs.FastStepOptions()),
    "kernels": ("cuda", fs.FastStepOptions()),
    "kernels+tf32": ("cuda", fs.FastStepOptions(tf32=True)),
    "kernels+tf32+bf16clip": ("cuda", fs.FastStepOptions(tf32=True, autocast=("clip",))),
    "tf32+bf16": ("ref", fs.FastStepOptions(tf32=True, autocast=("generator", "clip"))),
    "compile+tf32": ("ref", fs.FastStepOptions(tf32=True, compile=True)),
    "kernels+tf32+channels_last": ("cuda", fs.FastStepOptions(tf32=True, channels_last=True)),
}


def parse_mode(mode: str):
    freeze = mode.endswith("+freeze")
    base = mode[:-len("+freeze")] if freeze else mode
    if base not in MODE_OPTIONS:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODE_OPTIONS)} (each also with +freeze)")
    impl, options = MODE_OPTIONS[base]
    return impl, options, freeze


def freeze_layers(g: Generator, k: int) -> list[str]:
    """Leave trainable only the layers of W+ slots 0..k-1 (NADA's slot -> layer list); returns their names."""
    modules = dict(g.named_modules())
    names = [n for n in ["conv1", "to_rgb1"] + [f"convs.{i}" for i in range(max(0, k - 2))] if n in modules]
    for n, p in g.named_parameters():
        p.requires_grad_(False)
    for name in names:
        for p in modules[name].parameters():
            p.requires_grad_(True)
    return names


def build_step(base: Generator, clips, directions, *, impl: str, options: fs.FastStepOptions, freeze_k: int | None,
               batch: int, device: torch.device):
    g_src = copy.deepcopy(base).eval()
    g_tgt = copy.deepcopy(base).train()
    for p in g_src.parameters():
        p.requires_grad_(False)
    for n, p in g_tgt.named_parameters():
        p.requires_grad_(not n.startswith("style."))
    if freeze_k is not None:
        freeze_layers(g_tgt, freeze_k)
    for g in (g_src, g_tgt):
        g.set_impl(impl)
    clip_models = [copy.deepcopy(m) for m in clips]
    fs.set_tf32(options.tf32)
    for g in (g_src, g_tgt):
        fs.prepare_generator(g, options, device)
    for m in clip_models:
        fs.prepare_clip(m, options, device)
    params = [p for n, p in g_tgt.named_parameters() if not n.startswith("style.")]
    opt = torch.optim.Adam(params, lr=0.002, betas=(0.0, 0.99))
    gen = torch.Generator(device="cpu").manual_seed(0)

    def step() -> torch.Tensor:
        z = torch.randn(batch, base.arch.style_dim, generator=gen).to(device)
        with torch.no_grad():
            ws = g_src.mapping(z)[:, None].repeat(1, g_src.n_latent, 1)  # [N, L, D]
            noise = g_src.make_noise(batch, rng=gen)  # [N, 1, r, r] per layer, drawn on the CPU
            x_s = g_src.synthesis(ws, noise=noise)
        x_t = g_tgt.synthesis(ws, noise=noise)
        loss = x_t.new_zeros(())
        for model, d in zip(clip_models, directions):
            with torch.no_grad():
                e_s = model.encode_image(x_s)
            loss = loss + directional_loss(e_s, model.encode_image(x_t), d)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step, (g_src, g_tgt, clip_models, opt)


def measure(step, *, steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    for _ in range(warmup):
        step()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    times, last = [], None
    for _ in range(steps):
        t = time.perf_counter()
        last = step()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), float(last)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clip", default="ViT-B-32,ViT-B-16", help="open_clip architectures (random weights)")
    parser.add_argument("--modes", nargs="+", default=ALL_MODES)
    parser.add_argument("--freeze-k", type=int, default=8)
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke", action="store_true", help="CPU, 16 px, tiny random CLIPs, emulated kernels")
    args = parser.parse_args(argv)
    ctx = contextlib.nullcontext()
    arch_kwargs = {}
    if args.smoke:
        from zsgm.ops.cuda_emulation import emulated_backend

        args.device, args.size, args.steps, args.warmup, args.clip = "cpu", 16, 1, 1, "tiny-random,tiny-random"
        args.modes = [m for m in args.modes if not m.startswith("compile")]
        arch_kwargs = dict(channel_max=8, n_mlp=2)
        ctx = emulated_backend()
    for mode in args.modes:
        parse_mode(mode)  # fail fast on a typo
    device = torch.device(args.device)
    torch.manual_seed(0)
    env = dict(torch=torch.__version__, cuda=torch.version.cuda, device=str(device), size=args.size,
               batch=args.batch, clip=args.clip)
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    print("# " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    clips = [load_clip_model(ClipModelSpec(name=n), device=device) for n in args.clip.split(",")]
    directions = [text_direction(m, "photo", "sketch", templates=["a {}."]).to(device) for m in clips]
    base = Generator(GeneratorArch.rosinality(args.size, **arch_kwargs)).to(device)
    rows, ref_ms = [], None
    print(f"{'mode':34s} {'ms/step':>9s} {'vs ref':>7s} {'peak GiB':>9s} {'loss':>9s}", flush=True)
    restore_tf32 = fs.set_tf32(False)
    with ctx:
        for mode in args.modes:
            impl, options, freeze = parse_mode(mode)
            row = dict(mode=mode)
            try:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                step, keep = build_step(base, clips, directions, impl=impl, options=options,
                                        freeze_k=args.freeze_k if freeze else None, batch=args.batch, device=device)
                seconds, loss = measure(step, steps=args.steps, warmup=args.warmup, device=device)
                row.update(ms=seconds * 1e3, loss=loss)
                row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" \
                    else float("nan")
                del step, keep
            except Exception as exc:  # noqa: BLE001 - one failing mode must not stop the table
                row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                print(f"{mode:34s} ERROR {row['error']}", flush=True)
            finally:
                fs.set_tf32(False)
            if "ms" in row:
                if mode == "ref":
                    ref_ms = row["ms"]
                row["speedup"] = ref_ms / row["ms"] if ref_ms else float("nan")
                print(f"{mode:34s} {row['ms']:9.1f} {row['speedup']:7.2f} {row['peak_gib']:9.2f} {row['loss']:9.4f}",
                      flush=True)
            rows.append(row)
            if args.json:
                with open(args.json, "w", encoding="utf-8") as fh:
                    json.dump(dict(env=env, rows=rows), fh, indent=1)
    restore_tf32()
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
