#!/usr/bin/env python3
"""PyTorch peer for configs/cnn.toml (issue 18): the same network, preprocessing, split and
early stopping in plain PyTorch eager, for the reference accuracy and the epoch time.

Network: conv 32 (3x3, padding 1) -> ReLU -> max pool 2 -> conv 64 (3x3, padding 1) -> ReLU ->
max pool 2 -> dropout 0.25 -> flatten -> dense 128 -> ReLU -> dropout 0.5 -> dense 10, PyTorch's
default init (what `init = "pytorch"` draws, from another generator), SGD lr 0.01 momentum 0.9,
batch 128, cross-entropy (mean). Data: the vendored IDX files, per-image z-scoring, a seeded
48,000/12,000 split (the split draws differ from wgtrain's). Early stopping as the config says:
stop after 5 epochs without a new best validation loss (at most 60), test the best weights.

    python3 bench/peers/torch_cnn.py --seeds 1,2,3            # accuracy, one JSON line per seed
    python3 bench/peers/torch_cnn.py --bench --epochs 3        # epoch time only
Thread count: --threads N (torch.set_num_threads).
"""
import argparse
import copy
import json
import statistics
import time

import torch
from torch import nn

from fashion_mnist import DEFAULT_DIR, load_splits, machine, print_machine


def network():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 10),
    )


def evaluate(model, x, y, batch=1024):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            z = model(x[i : i + batch])
            loss += float(nn.functional.cross_entropy(z, y[i : i + batch], reduction="sum"))
            correct += int((z.argmax(1) == y[i : i + batch]).sum())
    return loss / len(x), correct / len(x)


def epoch(model, opt, x, y, batch):
    model.train()
    perm = torch.randperm(len(x), device=x.device)
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        idx = perm[i : i + batch]
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=DEFAULT_DIR)
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bench", action="store_true", help="time epochs only")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    where = machine()
    print_machine(where)
    device = torch.device(args.device)
    for seed in [int(s) for s in args.seeds.split(",")]:
        torch.manual_seed(seed)
        (xt, yt), (xv, yv), (xs, ys) = load_splits(args.data, seed)
        shape = (-1, 1, 28, 28)
        xt, xv, xs = (torch.from_numpy(a).reshape(shape).to(device) for a in (xt, xv, xs))
        yt, yv, ys = (torch.from_numpy(a).to(device) for a in (yt, yv, ys))
        model = network().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        times, best, best_state, best_epoch, since = [], float("inf"), None, 0, 0
        for e in range(1, (args.warmup if args.bench else 0) + args.epochs + 1):
            secs = epoch(model, opt, xt, yt, 128)
            if args.bench:
                if e > args.warmup:
                    times.append(secs)
                continue
            times.append(secs)
            val_loss, val_acc = evaluate(model, xv, yv)
            print(f"seed {seed} epoch {e}: {secs:.2f} s, val loss {val_loss:.4f} acc {100 * val_acc:.2f}%", flush=True)
            if val_loss < best:
                best, best_state, best_epoch, since = val_loss, copy.deepcopy(model.state_dict()), e, 0
            else:
                since += 1
                if since >= args.patience:
                    break
        result = {
            "peer": "torch",
            "config": "cnn",
            "seed": seed,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "median_epoch_secs": statistics.median(times),
            "torch": torch.__version__,
            "machine": where,
        }
        if not args.bench:
            model.load_state_dict(best_state)
            test_loss, test_acc = evaluate(model, xs, ys)
            result.update(best_epoch=best_epoch, best_val_loss=best, test_loss=test_loss, test_accuracy=test_acc)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
