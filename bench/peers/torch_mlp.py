#!/usr/bin/env python3
"""PyTorch peer for `wgtrain bench`: the paper's momentum experiment in plain PyTorch eager.

Same network, data and schedule as configs/momentum.toml: Fashion-MNIST from the vendored IDX
files, per-image z-scoring, a 48,000/12,000 split, [784, 128, 10] tanh, softmax cross-entropy
(mean), SGD with momentum 0.9 at lr 0.01, the paper's 0.01*U[0,1) init. The whole training split
lives on the device as one tensor; each epoch slices batches from a shuffled index (no
DataLoader). Only the training loop is timed, with the device synchronised before reading the
clock. Prints one JSON line per batch size and a table.

    python3 bench/peers/torch_mlp.py --device cuda --batch-sizes 32,128,1024
"""
import argparse
import json
import statistics
import time

import torch

from fashion_mnist import DEFAULT_DIR, load_train_split, machine, print_machine


def paper_init(model, generator):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.01 * torch.rand(p.shape, generator=generator))


def bench(x, y, batch, args):
    device = x.device
    gen = torch.Generator().manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.Tanh(), torch.nn.Linear(128, 10)).to(device)
    paper_init(model, gen)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = x.shape[0]
    times = []
    for epoch in range(args.warmup + args.epochs):
        perm = torch.randperm(n, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch >= args.warmup:
            times.append(time.perf_counter() - start)
    med = statistics.median(times)
    flops = 2 * n * (784 * 128 + 128 * 10) * 2 + 2 * n * 128 * 10  # forward + weight grads + one input grad
    return {
        "peer": "torch",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "batch_size": batch,
        "median_epoch_secs": med,
        "min_epoch_secs": min(times),
        "max_epoch_secs": max(times),
        "samples_per_sec": n / med,
        "gflops": flops / med / 1e9,
        "final_loss": float(loss.detach()),
        "torch": torch.__version__,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=DEFAULT_DIR)
    ap.add_argument("--batch-sizes", default="128")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images, labels = load_train_split(args.data, args.seed)
    device = torch.device(args.device)
    x = torch.from_numpy(images).to(device)
    y = torch.from_numpy(labels).to(device)
    rows = []
    where = machine()
    print_machine(where)
    for b in [int(v) for v in args.batch_sizes.split(",")]:
        r = bench(x, y, b, args)
        r["machine"] = where
        print(json.dumps(r), flush=True)
        rows.append(r)
    print(f"| peer | device | batch | median s/epoch (min–max) | samples/s | GFLOP/s |")
    print(f"|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| torch {r['torch']} | {r['device']} | {r['batch_size']} | {r['median_epoch_secs']:.4f} "
            f"({r['min_epoch_secs']:.4f}–{r['max_epoch_secs']:.4f}) | {r['samples_per_sec']:,.0f} | {r['gflops']:.1f} |"
        )


if __name__ == "__main__":
    main()
