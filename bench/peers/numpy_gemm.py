#!/usr/bin/env python3
"""numpy peer for the CPU path's GEMM peak: float32 `a @ b` (OpenBLAS in numpy's wheels) on
the square sizes `wgtrain bench` times its own GEMM on, the same way: two untimed products and
seven timed per size, the fastest product's rate. Prints one line in the form of bench's
"CPU f32 GEMM peak here" line, and a JSON line.

    OPENBLAS_NUM_THREADS=2 python3 bench/peers/numpy_gemm.py
Thread count: set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS before starting it.
"""
import json
import time

import numpy as np

from fashion_mnist import machine

SIZES = [384, 768, 1024]
RUNS = 7


def operand(n, seed):
    # The values bench::gemm_operand makes: in [-1, 1), no denormals, nothing to shortcut.
    i = np.arange(n * n, dtype=np.int64)
    return (((i * 7919 + seed) % 2001) / 1000.0 - 1.0).astype(np.float32).reshape(n, n)


def main():
    best = (0.0, 0)
    for n in SIZES:
        a, b = operand(n, 1), operand(n, 2)
        for _ in range(2):
            a @ b
        fastest = float("inf")
        for _ in range(RUNS):
            start = time.perf_counter()
            a @ b
            fastest = min(fastest, time.perf_counter() - start)
        gflops = 2.0 * n**3 / fastest / 1e9
        best = max(best, (gflops, n))
    blas = "unknown"
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:
        pass
    sizes = ", ".join(f"{n}³" for n in SIZES)
    print(f"numpy f32 GEMM peak here: {best[0]:.1f} GFLOP/s (numpy {np.__version__} on {blas}, "
          f"fastest of {RUNS} products at each of {sizes}; fastest at {best[1]}³)", flush=True)
    print(json.dumps({"peer": "numpy", "gemm_peak_gflops": best[0], "size": best[1],
                      "blas": blas, "machine": machine()}))


if __name__ == "__main__":
    main()
