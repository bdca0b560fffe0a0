"""The fused Adam step against the time to stream its arrays through memory once (CPU).

Adam reads p, g, m, v and writes p, m, v: the floor is a kernel with exactly that memory
traffic and trivial arithmetic, compiled the same way.  Prints medians over interleaved rounds.

    python benchmarks/optimizer_stream.py [n_params]      # default: 1,863,690 (784-1024-1024-10)
"""

from __future__ import annotations

import sys
import time

import numpy as np

from xpnet.backend import resolve_backend
from xpnet.kernels.cpu import NumbaOps, kernel
from xpnet.optim import Adam


@kernel
def _stream(p, g, m, v):
    for i in range(p.shape[0]):
        gi = g[i]
        m[i] = m[i] + gi
        v[i] = v[i] + gi
        p[i] = p[i] + gi


def main(n: int = 1_863_690, rounds: int = 15, steps: int = 20) -> dict:
    rng = np.random.default_rng(0)
    p, g = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    ops, opt = NumbaOps(resolve_backend(), "float32"), Adam(lr=1e-6)
    arrays = [np.zeros(n, np.float32) for _ in range(4)]
    adam = lambda: opt.step(p, g, ops)  # noqa: E731
    stream = lambda: _stream(ops.parallel and n >= ops.parallel_min, *arrays)  # noqa: E731
    times = {"adam": [], "stream": []}
    for fn in (adam, stream):
        fn()
    for _ in range(rounds):
        for name, fn in (("adam", adam), ("stream", stream)):
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - start) / steps)
    a, s = np.median(times["adam"]) * 1e3, np.median(times["stream"]) * 1e3
    gb = 7 * 4 * n / 1e9
    print(f"{n:,} float32 parameters: fused Adam {a:.3f} ms, stream floor {s:.3f} ms "
          f"({gb / s * 1e3:.1f} GB/s), ratio {a / s:.2f}")
    return {"adam_ms": a, "stream_ms": s, "ratio": a / s}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_863_690)
