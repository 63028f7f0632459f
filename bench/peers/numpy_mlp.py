#!/usr/bin/env python3
"""numpy peer for `wgtrain bench`: the paper's momentum experiment from scratch in float32.

The paper's own approach (numpy, hand-written backprop): Fashion-MNIST from the vendored IDX
files, per-image z-scoring, a 48,000/12,000 split, [784, 128, 10] tanh, softmax cross-entropy
(mean gradient), SGD with the paper's momentum rule v <- g*v - lr*grad, w <- w + v (gamma 0.9,
lr 0.01), the paper's 0.01*U[0,1) init. Weights are (out, in) like nn.Linear. Batches are
sliced from a shuffled index; only the training loop is timed. Prints one JSON line per batch
size and a table in the same form as `wgtrain bench`.

    python3 bench/peers/numpy_mlp.py --batch-sizes 128,1024
Thread count: set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS before starting it.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np

from fashion_mnist import DEFAULT_DIR, load_train_split, machine, print_machine


def bench(x, y, batch, args):
    rng = np.random.default_rng(args.seed)
    w1 = (0.01 * rng.random((128, 784))).astype(np.float32)
    b1 = (0.01 * rng.random(128)).astype(np.float32)
    w2 = (0.01 * rng.random((10, 128))).astype(np.float32)
    b2 = (0.01 * rng.random(10)).astype(np.float32)
    params = [w1, b1, w2, b2]
    vel = [np.zeros_like(p) for p in params]
    lr, gamma = np.float32(0.01), np.float32(0.9)
    n = x.shape[0]
    eye = np.eye(10, dtype=np.float32)
    times = []
    loss = float("nan")
    for epoch in range(args.warmup + args.epochs):
        perm = rng.permutation(n)
        start = time.perf_counter()
        total = 0.0
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            xb, yb = x[idx], y[idx]
            rows = np.float32(len(idx))
            h = np.tanh(xb @ w1.T + b1)
            z = h @ w2.T + b2
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            s = e.sum(axis=1, keepdims=True)
            p = e / s
            total += float(np.sum(np.log(s[:, 0]) - z[np.arange(len(idx)), yb]))
            dz2 = (p - eye[yb]) / rows
            gw2 = dz2.T @ h
            gb2 = dz2.sum(axis=0)
            dh = (dz2 @ w2) * (1.0 - h * h)
            gw1 = dh.T @ xb
            gb1 = dh.sum(axis=0)
            for param, v, g in zip(params, vel, (gw1, gb1, gw2, gb2)):
                v *= gamma
                v -= lr * g
                param += v
        if epoch >= args.warmup:
            times.append(time.perf_counter() - start)
        loss = total / n
    med = statistics.median(times)
    flops = 2 * n * (784 * 128 + 128 * 10) * 2 + 2 * n * 128 * 10
    return {
        "peer": "numpy",
        "device": "cpu",
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "default")),
        "batch_size": batch,
        "median_epoch_secs": med,
        "min_epoch_secs": min(times),
        "max_epoch_secs": max(times),
        "samples_per_sec": n / med,
        "gflops": flops / med / 1e9,
        "train_loss_last_epoch": loss,
        "numpy": np.__version__,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DEFAULT_DIR)
    ap.add_argument("--batch-sizes", default="128")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    x, y = load_train_split(args.data, args.seed)
    rows = []
    where = machine()
    print_machine(where)
    for b in [int(v) for v in args.batch_sizes.split(",")]:
        r = bench(x, y, b, args)
        r["machine"] = where
        print(json.dumps(r), flush=True)
        rows.append(r)
    print("| peer | device | batch | median s/epoch (min–max) | samples/s | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| numpy {r['numpy']} | cpu ({r['threads']} threads) | {r['batch_size']} | {r['median_epoch_secs']:.4f} "
            f"({r['min_epoch_secs']:.4f}–{r['max_epoch_secs']:.4f}) | {r['samples_per_sec']:,.0f} | {r['gflops']:.1f} |"
        )


if __name__ == "__main__":
    main()
