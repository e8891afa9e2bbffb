"""Gradient checkpointing of the generator (``optim.grad_checkpointing``): memory and time of a training
forward + backward through the target generator's synthesis, with and without it, on the CPU.

Each setting runs in its own fresh process, so its peak resident memory (``ru_maxrss``) is its own. Reported:

- ``saved MiB``: bytes autograd keeps for backward during the forward (``saved_tensors_hooks``; exact, what
  checkpointing removes);
- ``peak tensors MiB``: the peak of live tensor memory over forward + backward (torch's ``MemTracker``: weights,
  gradients, activations, temporaries), and the same without the weights;
- ``RSS growth MiB``: the rise of the process's peak resident memory over the timed steps. On the CPU this follows
  glibc's allocator (freed blocks are kept and reused, recomputation interleaves allocations), not the live
  tensors, and is shown only to say so;
- ``s / step``: wall time of forward + backward, median of ``--repeats``.

    python benchmarks/bench_grad_checkpointing.py --size 256 --channel-max 256 --batch 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(size: int, channel_max: int, batch: int, repeats: int, checkpointing: bool, threads: int) -> dict:
    """One setting, in this process: timed steps first, then one step under torch's ``MemTracker``."""
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    from zsgm.generator import Generator, GeneratorArch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    g = Generator(GeneratorArch.rosinality(size, channel_max=channel_max)).train()
    for name, p in g.named_parameters():
        p.requires_grad_(not name.startswith("style."))
    g.grad_checkpointing = checkpointing
    rng = torch.Generator().manual_seed(0)
    ws = torch.randn(batch, g.n_latent, g.arch.style_dim, generator=rng)
    noise = g.make_noise(batch, rng=rng)
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    def step() -> None:
        g.zero_grad(set_to_none=True)
        images = g.synthesis(ws, noise=noise)  # [B, 3, size, size]
        images.square().mean().backward()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB: runtime, weights, inputs
    times = []
    for i in range(repeats + 1):  # the first call warms up and is not timed
        start = time.perf_counter()
        step()
        if i:
            times.append(time.perf_counter() - start)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        g.synthesis(ws, noise=noise)
    g.zero_grad(set_to_none=True)
    tracker = MemTracker()
    tracker.track_external(g, ws, *noise)
    with tracker:
        step()
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]
    total = next(v for k, v in peak.items() if str(k) == "Total")
    params = next(v for k, v in peak.items() if str(k).endswith("PARAM"))
    return {"checkpointing": checkpointing, "saved_mib": saved / 2 ** 20, "peak_tensors_mib": total / 2 ** 20,
            "peak_non_weight_mib": (total - params) / 2 ** 20, "peak_rss_mib": peak_rss, "rss_before_mib": before,
            "seconds": statistics.median(times)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="generator resolution (default: 256)")
    parser.add_argument("--channel-max", type=int, default=256, help="channel cap (default: 256)")
    parser.add_argument("--batch", type=int, default=2, help="latents per step (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per setting (default: 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--one", choices=["on", "off"], help=argparse.SUPPRESS)  # a child process's setting
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.size, args.channel_max, args.batch, args.repeats, args.one == "on",
                                 args.threads)))
        return
    rows = []
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, __file__, "--one", mode, "--size", str(args.size), "--channel-max",
                              str(args.channel_max), "--batch", str(args.batch), "--repeats", str(args.repeats),
                              "--threads", str(args.threads)], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    import torch

    print(f"generator {args.size} px, channel_max {args.channel_max}, batch {args.batch}, CPU, {args.threads} "
          f"thread(s), torch {torch.__version__}; forward + backward of the synthesis, median of {args.repeats}")
    print(f"{'grad_checkpointing':<20}{'saved MiB':>10}{'peak tensors MiB':>18}{'(not weights)':>15}"
          f"{'RSS growth MiB':>16}{'s / step':>10}")
    for r in rows:
        r["growth_mib"] = r["peak_rss_mib"] - r["rss_before_mib"]
        print(f"{str(r['checkpointing']).lower():<20}{r['saved_mib']:>10.1f}{r['peak_tensors_mib']:>18.1f}"
              f"{r['peak_non_weight_mib']:>15.1f}{r['growth_mib']:>16.0f}{r['seconds']:>10.2f}")
    off, on = rows
    print(f"with checkpointing: saved for backward {on['saved_mib'] / off['saved_mib']:.2f}x, peak tensor memory "
          f"{on['peak_tensors_mib'] / off['peak_tensors_mib']:.2f}x (not weights "
          f"{on['peak_non_weight_mib'] / off['peak_non_weight_mib']:.2f}x), time {on['seconds'] / off['seconds']:.2f}x")


if __name__ == "__main__":
    main()
