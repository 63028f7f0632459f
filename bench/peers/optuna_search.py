#!/usr/bin/env python3
"""Optuna + PyTorch eager peer for `wgtrain sweep configs/sweeps/search.toml --device cpu`.

The same search the way an Optuna user writes it: RandomSampler, SuccessiveHalvingPruner
(min_resource 3, reduction factor 3: the file's [prune] table), 27 trials over the same space
(learning rate log-uniform 0.001-0.3, momentum 0.5-0.99, hidden width 32/64/128/256, tanh,
sigmoid or ReLU), each the paper's model (configs/momentum.toml: batch 128, SGD with momentum,
the 0.01*U[0,1) init, at most 100 epochs, the paper's early stopping: stop once validation loss
has risen 5 epochs in a row) trained in PyTorch eager with a validation pass every epoch, which
is what the pruner reads. The pruner is asynchronous (a trial is judged when it reaches a rung,
against the trials that reached it before), where wgtrain's rungs wait for every trial, so the
two do not train the same epochs: compare epochs a second as well as wall time.

    python3 bench/peers/optuna_search.py --threads 2
Prints one line in words and a JSON line.
"""
import argparse
import json
import time

import numpy as np
import optuna
import torch

from fashion_mnist import DEFAULT_DIR, load_splits, machine

ACTIVATIONS = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}


def objective(trial, data, epochs_run, args):
    lr = trial.suggest_float("learning_rate", 0.001, 0.3, log=True)
    gamma = trial.suggest_float("momentum_gamma", 0.5, 0.99)
    hidden = trial.suggest_categorical("hidden", [32, 64, 128, 256])
    activation = trial.suggest_categorical("activation", list(ACTIVATIONS))
    (x, y), (vx, vy) = data
    gen = torch.Generator().manual_seed(args.seed + trial.number)
    model = torch.nn.Sequential(torch.nn.Linear(784, hidden), ACTIVATIONS[activation](), torch.nn.Linear(hidden, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.01 * torch.rand(p.shape, generator=gen))
    # The paper's rule v <- g*v - lr*grad, w <- w + v is PyTorch's momentum SGD at a constant lr.
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=gamma)
    loss_fn = torch.nn.CrossEntropyLoss()
    best, previous, rising = float("inf"), float("inf"), 0
    for epoch in range(1, args.max_epochs + 1):
        model.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 128):
            idx = perm[i : i + 128]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = float(loss_fn(model(vx), vy))
        epochs_run[0] += 1
        if not np.isfinite(val):
            raise optuna.TrialPruned()
        best = min(best, val)
        rising = rising + 1 if val > previous else 0
        previous = val
        trial.report(val, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
        if rising >= 5:
            break
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DEFAULT_DIR)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trials", type=int, default=27)
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    (x, y), (vx, vy), _ = load_splits(args.data, args.seed)
    data = ((torch.from_numpy(x), torch.from_numpy(y)), (torch.from_numpy(vx), torch.from_numpy(vy)))
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=args.seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=3, reduction_factor=3),
    )
    epochs_run = [0]
    study.optimize(lambda t: objective(t, data, epochs_run, args), n_trials=args.trials)
    secs = time.perf_counter() - start
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    print(f"optuna {optuna.__version__} + torch {torch.__version__}: {args.trials} trials ({pruned} pruned), "
          f"{epochs_run[0]} epochs in {secs:.1f} s ({epochs_run[0] / secs:.2f} epochs/s) on {args.threads} threads; "
          f"best validation loss {study.best_value:.4f}", flush=True)
    print(json.dumps({"peer": "optuna+torch", "trials": args.trials, "pruned": pruned, "epochs": epochs_run[0],
                      "seconds": secs, "best_val_loss": study.best_value, "threads": args.threads,
                      "machine": machine()}))


if __name__ == "__main__":
    main()
