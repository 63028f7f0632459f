#!/usr/bin/env python3
"""Loads a wgtrain model.safetensors with numpy alone and reports its Fashion-MNIST test accuracy.

    python3 docs/interop/evaluate_model.py runs/momentum-…/model.safetensors [DATA_DIR]

The file holds fc{i}.weight (out, in) and fc{i}.bias (out) in f32, as PyTorch's nn.Linear, and
its metadata names the layer widths and the hidden activation; the forward pass is
x -> act(x @ W.T + b) for hidden layers, softmax on the last. Inputs are z-scored per image.
For PyTorch: torch.nn.Linear(in, out) layers take these tensors as they are
(safetensors.torch.load_file gives a state_dict with the same names).
"""
import gzip
import json
import os
import struct
import sys

import numpy as np
from safetensors import safe_open


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    model = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    data = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "..", "data", "fashion-mnist")
    with safe_open(model, framework="numpy") as f:
        meta = f.metadata()
        layers = json.loads(meta["layers"])
        weights = [(f.get_tensor(f"fc{i}.weight"), f.get_tensor(f"fc{i}.bias")) for i in range(1, len(layers))]
    act = {"tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "relu": lambda z: np.maximum(z, 0), "none": lambda z: z}[meta["activation"]]

    name = lambda base: os.path.join(data, base + (".gz" if os.path.exists(os.path.join(data, base + ".gz")) else ""))
    x = read_idx(name("t10k-images-idx3-ubyte")).reshape(-1, layers[0]).astype(np.float64)
    y = read_idx(name("t10k-labels-idx1-ubyte")).astype(np.int64)
    std = x.std(axis=1, keepdims=True)
    x = (x - x.mean(axis=1, keepdims=True)) / np.where(std < 1e-8, 1.0, std)

    h = x
    for i, (w, b) in enumerate(weights):
        h = h @ w.T.astype(np.float64) + b
        if i < len(weights) - 1:
            h = act(h)
    h = h - h.max(axis=1, keepdims=True)
    log_p = h - np.log(np.exp(h).sum(axis=1, keepdims=True))
    print(json.dumps({"test_accuracy": float((h.argmax(axis=1) == y).mean()), "test_loss": float(-log_p[np.arange(len(y)), y].mean())}))


if __name__ == "__main__":
    main()
