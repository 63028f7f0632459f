#!/usr/bin/env python3
"""Loads any wgtrain model.safetensors with numpy alone and reports its test accuracy and loss.

    python3 docs/interop/evaluate_model.py runs/momentum-…/model.safetensors [DATA_DIR]

DATA_DIR holds the IDX test files (Fashion-MNIST's by default). The tensors are f32 in
PyTorch's layouts and names: fc{i}.weight (out, in) and fc{i}.bias (out) as nn.Linear's,
conv{i}.weight (out, in, k, k) and conv{i}.bias (out) as nn.Conv2d's, so
safetensors.torch.load_file gives a state_dict with the same names. The metadata says what the
model is:
- `layers` (the widths) and `activation` (the hidden layers'): x -> act(x @ W.T + b) for each
  hidden layer, softmax on the last;
- or `network`, its layers as a config writes them (conv, max_pool, dropout, dense, every key
  given), and `input` ([C, H, W]): images (N, C, H, W), a dense layer's input flattened in that
  order as torch.flatten does, dropout the identity, softmax on the last layer's outputs.
Inputs are z-scored per image.
"""
import gzip
import json
import os
import struct
import sys

import numpy as np
from safetensors import safe_open

ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "relu": lambda z: np.maximum(z, 0),
    "none": lambda z: z,
}


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def conv2d(x, w, b, stride, padding):
    """x (N, C, H, W), w (O, C, K, K) -> (N, O, H', W'), as nn.Conv2d."""
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (xp.shape[2] - k) // stride + 1
    ow = (xp.shape[3] - k) // stride + 1
    out = np.broadcast_to(b[None, :, None, None], (x.shape[0], w.shape[0], oh, ow)).copy()
    for i in range(k):
        for j in range(k):
            taps = xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
            out += np.einsum("nchw,oc->nohw", taps, w[:, :, i, j])
    return out


def max_pool2d(x, window, stride):
    """The largest value of each window, as nn.MaxPool2d (windows running off the edge dropped)."""
    oh = (x.shape[2] - window) // stride + 1
    ow = (x.shape[3] - window) // stride + 1
    out = np.full(x.shape[:2] + (oh, ow), -np.inf)
    for i in range(window):
        for j in range(window):
            out = np.maximum(out, x[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride])
    return out


def mlp(f, meta):
    """The forward pass of a model the `layers` metadata describes, as a function of x (N, I)."""
    layers = json.loads(meta["layers"])
    weights = [(f.get_tensor(f"fc{i}.weight"), f.get_tensor(f"fc{i}.bias")) for i in range(1, len(layers))]
    act = ACTIVATIONS[meta["activation"]]

    def forward(x):
        h = x
        for i, (w, b) in enumerate(weights):
            h = h @ w.T.astype(np.float64) + b
            if i < len(weights) - 1:
                h = act(h)
        return h

    return forward


def network(f, meta):
    """The forward pass of a model the `network` metadata describes, as a function of x (N, C·H·W)."""
    specs = json.loads(meta["network"])
    shape = json.loads(meta["input"])
    steps, convs, denses = [], 0, 0
    for spec in specs:
        act = ACTIVATIONS[spec.get("activation", "none")]
        if "conv" in spec:
            convs += 1
            w, b = f.get_tensor(f"conv{convs}.weight").astype(np.float64), f.get_tensor(f"conv{convs}.bias")
            steps.append(lambda h, w=w, b=b, s=spec, act=act: act(conv2d(h, w, b, s["stride"], s["padding"])))
        elif "max_pool" in spec:
            steps.append(lambda h, s=spec: max_pool2d(h, s["max_pool"], s["stride"]))
        elif "dense" in spec:
            denses += 1
            w, b = f.get_tensor(f"fc{denses}.weight").astype(np.float64), f.get_tensor(f"fc{denses}.bias")
            steps.append(lambda h, w=w, b=b, act=act: act(h.reshape(len(h), -1) @ w.T + b))
        # Dropout is the identity when a model is evaluated.

    def forward(x):
        h = x.reshape(len(x), *shape)
        for step in steps:
            h = step(h)
        return h.reshape(len(h), -1)

    return forward


def main():
    model = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    data = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "..", "data", "fashion-mnist")
    with safe_open(model, framework="numpy") as f:
        meta = f.metadata()
        forward = network(f, meta) if "network" in meta else mlp(f, meta)

    name = lambda base: os.path.join(data, base + (".gz" if os.path.exists(os.path.join(data, base + ".gz")) else ""))
    x = read_idx(name("t10k-images-idx3-ubyte"))
    x = x.reshape(len(x), -1).astype(np.float64)
    y = read_idx(name("t10k-labels-idx1-ubyte")).astype(np.int64)
    std = x.std(axis=1, keepdims=True)
    x = (x - x.mean(axis=1, keepdims=True)) / np.where(std < 1e-8, 1.0, std)

    # A few hundred images at a time: a convolution's activations for all 10,000 would not fit.
    h = np.concatenate([forward(x[i : i + 500]) for i in range(0, len(x), 500)])
    h = h - h.max(axis=1, keepdims=True)
    log_p = h - np.log(np.exp(h).sum(axis=1, keepdims=True))
    print(json.dumps({"test_accuracy": float((h.argmax(axis=1) == y).mean()), "test_loss": float(-log_p[np.arange(len(y)), y].mean())}))


if __name__ == "__main__":
    main()
