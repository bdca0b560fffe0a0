"""Does a CUDA graph of the whole training step pay off?  Measure before building one (GPU only).

Prints, for an MLP at small batch (the launch-bound regime): xpnet's step time and launches per
step, the cost of one empty kernel launch, and PyTorch's step eager vs replayed from a CUDA graph
(torch.cuda.graphs can capture cuBLAS; CuPy cannot).  The gain PyTorch gets from the graph is the
upper bound on what a whole-step graph could give xpnet.  See docs/performance.md.

    python benchmarks/cuda_graph_probe.py [--sizes 784,512,512,10] [--batch-sizes 64,256,1024]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def _time(fn, steps, rounds=7):
    """Median over rounds of microseconds per call, timed with CUDA events (bench's timer)."""
    from xpnet.bench import Timer

    timer = Timer("cuda")
    for _ in range(3):
        fn()
    return float(np.median([timer(fn, steps) for _ in range(rounds)])) * 1e6


def probe(sizes, batch, steps=200):
    import cupy
    import torch

    from xpnet.bench import harness

    step, trainer = harness.xpnet_step(sizes, batch, "cuda", "float32", "xpnet")
    before = trainer.ops.launches
    step()
    launches = trainer.ops.launches - before
    empty = cupy.ElementwiseKernel("", "raw int32 x", "(void)x;", "xpnet_empty")
    dummy = cupy.zeros(1, dtype=cupy.int32)
    launch_us = _time(lambda: empty(dummy, size=1), steps)
    xpnet_us = _time(step, steps)

    torch_step = harness.torch_step(sizes, batch, "cuda", "float32")
    torch_us = _time(torch_step, steps)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream before capture, as torch requires
        for _ in range(3):
            torch_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch_step()
    graph_us = _time(graph.replay, steps)
    return {"sizes": sizes, "batch_size": batch, "xpnet_us": xpnet_us, "launches_per_step": launches,
            "empty_launch_us": launch_us, "launch_overhead_share": launches * launch_us / xpnet_us,
            "torch_eager_us": torch_us, "torch_graph_us": graph_us, "torch_graph_gain": torch_us / graph_us}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="784,512,512,10")
    parser.add_argument("--batch-sizes", default="64,256,1024")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [probe(sizes, int(b)) for b in args.batch_sizes.split(",")]
    print(json.dumps(rows, indent=1))
    print("batch  xpnet us  launches  launch us  launch share  torch eager us  torch graph us  graph gain")
    for r in rows:
        print(f"{r['batch_size']:>5}  {r['xpnet_us']:8.1f}  {r['launches_per_step']:8d}  {r['empty_launch_us']:9.2f}"
              f"  {r['launch_overhead_share']:12.0%}  {r['torch_eager_us']:14.1f}  {r['torch_graph_us']:14.1f}"
              f"  {r['torch_graph_gain']:9.2f}x")


if __name__ == "__main__":
    main()
