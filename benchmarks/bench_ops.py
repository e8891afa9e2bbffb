"""Per-op timings at StyleGAN2 generator shapes: reference, reference under torch.compile, CuPy kernels.

    python benchmarks/bench_ops.py --device cuda --size 1024 --batch 1 4 16 --dtype float32 float16

Prints one line per (op, shape, dtype) with median milliseconds and the ratio ref / kernel, measured in
the same run (CUDA events, warm-up first, median of --repeat runs). On CPU only the reference runs.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from zsgm.ops import bias_act, setup_filter, upfirdn2d


def channels(r: int) -> int:
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}[r]


def timed(fn, *, repeat: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            import time

            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def cases(size: int, batch: int):
    """(name, make_inputs, call) for the two upfirdn2d specialisations and bias_act at every resolution."""
    f = setup_filter([1, 3, 3, 1])
    r = 8
    while r <= size:
        c = channels(r)
        yield (f"upsample-skip r={r}", lambda r=r: (torch.randn(batch, 3, r // 2, r // 2),),
               lambda x, impl: upfirdn2d(x, f.to(x.device), up=2, padding=(2, 1, 2, 1), gain=4, impl=impl))
        yield (f"blur-after-upconv r={r} c={c}", lambda r=r, c=c: (torch.randn(batch, c, r + 1, r + 1),),
               lambda x, impl: upfirdn2d(x, f.to(x.device), padding=1, gain=4, impl=impl))
        yield (f"bias_act-lrelu r={r} c={c}", lambda r=r, c=c: (torch.randn(batch, c, r, r), torch.randn(c)),
               lambda x, b, impl: bias_act(x, b, act="lrelu", impl=impl))
        r *= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--dtype", nargs="+", default=["float32"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"{'op':40s} {'batch':>5s} {'dtype':>8s} {'ref ms':>9s} {'compile ms':>10s} {'kernel ms':>9s} "
          f"{'ref/kern':>8s}")
    for dtype_name in args.dtype:
        dtype = getattr(torch, dtype_name)
        for batch in args.batch:
            for name, make, call in cases(args.size, batch):
                inputs = [t.to(device=device, dtype=dtype) for t in make()]
                ref = timed(lambda: call(*inputs, impl="ref"), repeat=args.repeat, device=device)
                comp = float("nan")
                if not args.no_compile:
                    compiled = torch.compile(lambda *a: call(*a, impl="ref"))
                    comp = timed(lambda: compiled(*inputs), repeat=args.repeat, device=device)
                kern = float("nan")
                if device.type == "cuda":
                    kern = timed(lambda: call(*inputs, impl="cuda"), repeat=args.repeat, device=device)
                print(f"{name:40s} {batch:5d} {dtype_name:>8s} {ref:9.3f} {comp:10.3f} {kern:9.3f} "
                      f"{ref / kern if kern == kern else float('nan'):8.2f}")


if __name__ == "__main__":
    main()
