"""Per-op throughput at StyleGAN2 generator shapes: the CuPy kernels against the torch reference.

    python benchmarks/bench_ops.py --device cuda --sizes 64 256 1024 --batch 4 16 --dtype float32 float16
    python benchmarks/bench_ops.py --smoke            # CPU, tiny shapes, kernels emulated (checks the script)

For every (op, resolution, batch, dtype) and pass (forward; backward = the op's gradient launches) it times
``--iters`` back-to-back calls between two CUDA events (so launch overhead overlaps GPU work, as in a
model), takes the median of ``--repeat`` such timings, and prints milliseconds per call for the reference
and the kernel, their ratio, the kernel's effective bandwidth (minimal bytes read + written / time) and that
bandwidth as a share of the H200's HBM peak (4.8 TB/s; ``--hbm-tbs`` for another GPU). ``--compile`` adds
the reference under ``torch.compile`` (Inductor's fused version is the fair baseline for bias_act).
``--json PATH`` writes every row. Shapes (OPS.md 2.3): bias_act lrelu on conv outputs [B, C(r), r, r],
the blur after the up-conv on [B, C(r), r+1, r+1] (pad 1, gain 4) and the skip upsample on
[B, 3, r/2, r/2] (up 2, pad (2, 1, 2, 1), gain 4), with rosinality's config-f channels; the blur also as a
separable filter (two 1-D passes), to measure whether separating the 4x4 filter pays.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time

import torch

from zsgm.fast_step import set_tf32
from zsgm.ops import bias_act, setup_filter, upfirdn2d

H200_HBM_TBS = 4.8


CHANNEL_MAX = [512]  # --channel-max (the smoke mode caps it)


def channels(r: int) -> int:
    return min({4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}[r], CHANNEL_MAX[0])


def timed(fn, *, iters: int, repeat: int, device: torch.device) -> float:
    """Median over ``repeat`` of (time of ``iters`` back-to-back calls) / iters, in ms."""
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / iters)
        else:
            t = time.perf_counter()
            for _ in range(iters):
                fn()
            times.append((time.perf_counter() - t) * 1e3 / iters)
    return statistics.median(times)


def cases(r: int, batch: int, dtype: torch.dtype, device: torch.device, f: torch.Tensor):
    """(name, fwd(impl), bwd(impl) or None, forward bytes, backward bytes) at resolution r."""
    es = torch.tensor([], dtype=dtype).element_size()
    c = channels(r)
    g = torch.Generator(device="cpu").manual_seed(r)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    xb, bb = rnd(batch, c, r, r), rnd(c)
    xu = rnd(batch, c, r + 1, r + 1)
    xs = rnd(batch, 3, r // 2, r // 2)
    out = []

    def bias_fwd(impl):
        return bias_act(xb, bb, act="lrelu", clamp=256.0, impl=impl)

    def upconv_blur(impl, x=xu):
        return upfirdn2d(x, f, padding=1, gain=4, impl=impl)

    def skip_up(impl, x=xs):
        return upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4, impl=impl)

    def backward_of(fn, x, with_bias=False):
        """Backward only: the graph is built once per impl, then torch.autograd.grad runs its launches."""
        graphs = {}

        def bwd(impl):
            if impl not in graphs:
                xg = x.detach().requires_grad_(True)
                bg = bb.detach().requires_grad_(True) if with_bias else None
                y = fn(impl, xg) if not with_bias else bias_act(xg, bg, act="lrelu", clamp=256.0, impl=impl)
                graphs[impl] = (y, (xg, bg) if with_bias else (xg,), torch.randn_like(y))
            y, inputs, dy = graphs[impl]
            return torch.autograd.grad(y, inputs, dy, retain_graph=True)

        return bwd

    n = xb.numel() * es
    # bias_act backward: read dy and y, write dx, read dx again for db
    out.append((f"bias_act lrelu r={r} c={c}", bias_fwd, backward_of(None, xb, with_bias=True), 2 * n, 4 * n))
    nu, nuo = xu.numel() * es, batch * c * r * r * es
    out.append((f"blur-after-upconv r={r} c={c}", upconv_blur, backward_of(upconv_blur, xu), nu + nuo, nuo + nu))
    f1 = setup_filter([1, 3, 3, 1], separable=True).to(device)  # the same blur as two 1-D passes

    def upconv_blur_sep(impl, x=xu):
        return upfirdn2d(x, f1, padding=1, gain=4, impl=impl)

    out.append((f"blur-after-upconv-2pass r={r} c={c}", upconv_blur_sep, backward_of(upconv_blur_sep, xu),
                nu + nuo, nuo + nu))  # minimal traffic; the 2-pass kernel also writes and reads the middle
    ns, nso = xs.numel() * es, batch * 3 * r * r * es
    out.append((f"upsample-skip r={r}", skip_up, backward_of(skip_up, xs), ns + nso, nso + ns))
    return out


def run(args) -> list[dict]:
    device = torch.device(args.device)
    rows = []
    f = setup_filter([1, 3, 3, 1]).to(device)
    hbm = args.hbm_tbs * 1e12
    header = (f"{'op':32s} {'batch':>5s} {'dtype':>8s} {'pass':>4s} {'ref ms':>9s} {'kern ms':>9s} {'ref/kern':>8s} "
              f"{'kern GB/s':>9s} {'%HBM':>6s}" + (f" {'comp ms':>9s} {'comp/kern':>9s}" if args.compile else ""))
    print(header, flush=True)
    for dtype_name in args.dtype:
        dtype = getattr(torch, dtype_name)
        for batch in args.batch:
            for r in args.sizes:
                for name, fwd, bwd, fbytes, bbytes in cases(r, batch, dtype, device, f):
                    for pass_name, fn, nbytes in (("fwd", fwd, fbytes), ("bwd", bwd, bbytes)):
                        row = dict(op=name, r=r, batch=batch, dtype=dtype_name, pass_=pass_name, bytes=nbytes)
                        try:
                            row["ref_ms"] = timed(lambda: fn("ref"), iters=args.iters, repeat=args.repeat,
                                                  device=device)
                            row["kernel_ms"] = timed(lambda: fn("cuda"), iters=args.iters, repeat=args.repeat,
                                                     device=device)
                            if args.compile:
                                compiled = torch.compile(lambda: fn("ref"))
                                row["compiled_ref_ms"] = timed(compiled, iters=args.iters, repeat=args.repeat,
                                                               device=device)
                        except Exception as exc:  # noqa: BLE001 - one failing case must not stop the table
                            row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                            print(f"{name:32s} {batch:5d} {dtype_name:>8s} {pass_name:>4s} ERROR {row['error']}",
                                  flush=True)
                            rows.append(row)
                            continue
                        row["ratio"] = row["ref_ms"] / row["kernel_ms"]
                        row["kernel_gbs"] = nbytes / (row["kernel_ms"] * 1e-3) / 1e9
                        row["hbm_share"] = row["kernel_gbs"] * 1e9 / hbm
                        line = (f"{name:32s} {batch:5d} {dtype_name:>8s} {pass_name:>4s} {row['ref_ms']:9.4f} "
                                f"{row['kernel_ms']:9.4f} {row['ratio']:8.2f} {row['kernel_gbs']:9.1f} "
                                f"{100 * row['hbm_share']:5.1f}%")
                        if args.compile:
                            line += f" {row['compiled_ref_ms']:9.4f} {row['compiled_ref_ms'] / row['kernel_ms']:9.2f}"
                        print(line, flush=True)
                        rows.append(row)
    return rows


def summary(rows: list[dict], min_r: int) -> str:
    """One line per criterion of issue 19 at generator shapes (r >= min_r, where launch overhead is amortised)."""
    big = [r for r in rows if "ratio" in r and r["r"] >= min_r]
    if not big:
        return "summary: no timed rows"
    worst_ratio = min(big, key=lambda r: r["ratio"])
    worst_bw = min(big, key=lambda r: r["hbm_share"])
    return (f"summary (r >= {min_r}): min ref/kernel {worst_ratio['ratio']:.2f} ({worst_ratio['op']} b={worst_ratio['batch']} "
            f"{worst_ratio['dtype']} {worst_ratio['pass_']}), min HBM share {100 * worst_bw['hbm_share']:.1f}% "
            f"({worst_bw['op']} b={worst_bw['batch']} {worst_bw['dtype']} {worst_bw['pass_']}); "
            f"targets: >= 2x and >= 50%")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float16"])
    parser.add_argument("--iters", type=int, default=50, help="back-to-back calls per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings per case (median reported)")
    parser.add_argument("--compile", action="store_true", help="also time the reference under torch.compile")
    parser.add_argument("--hbm-tbs", type=float, default=H200_HBM_TBS, help="HBM peak in TB/s (H200: 4.8)")
    parser.add_argument("--channel-max", type=int, default=512, help="cap the config-f channel counts")
    parser.add_argument("--summary-min-r", type=int, default=256)
    parser.add_argument("--json", default=None, help="write the rows (and the environment) to this file")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, emulated kernels")
    args = parser.parse_args(argv)
    ctx = contextlib.nullcontext()
    if args.smoke:
        from zsgm.ops.cuda_emulation import emulated_backend

        args.device, args.sizes, args.batch, args.dtype = "cpu", [8, 16], [1], ["float32"]
        args.iters, args.repeat, args.summary_min_r, args.channel_max = 1, 1, 8, 16
        ctx = emulated_backend()
    CHANNEL_MAX[0] = args.channel_max
    device = torch.device(args.device)
    env = dict(torch=torch.__version__, cuda=torch.version.cuda, device=str(device))
    if device.type == "cuda":
        set_tf32(False)  # the reference ops in full float32, as the kernels compute
        env["gpu"] = torch.cuda.get_device_name(device)
        try:
            import cupy

            env["cupy"] = cupy.__version__
        except Exception as exc:  # noqa: BLE001
            env["cupy"] = f"unavailable: {exc}"
    print("# " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    with ctx:
        rows = run(args)
    line = summary(rows, args.summary_min_r)
    print(line, flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(dict(env=env, rows=rows, summary=line), fh, indent=1)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
