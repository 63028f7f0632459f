"""The peers' shared data loading: the vendored IDX files, per-image z-scoring and a seeded
48,000/12,000 split, the same preprocessing wgtrain does (its split draws differ)."""
import gzip
import os
import struct

import numpy as np

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "fashion-mnist")


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_train_split(data_dir, seed):
    """(images float32 (48000, 784), labels int64) of the training split."""
    images = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz")).reshape(60000, -1).astype(np.float64)
    labels = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    mean = images.mean(axis=1, keepdims=True)
    std = images.std(axis=1, keepdims=True)
    images = ((images - mean) / np.where(std < 1e-8, 1.0, std)).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(images))
    train = order[: int(round(0.8 * len(images)))]
    return np.ascontiguousarray(images[train]), labels[train]
