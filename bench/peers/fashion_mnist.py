"""The peers' shared data loading: the vendored IDX files, per-image z-scoring and a seeded
48,000/12,000 split, the same preprocessing wgtrain does (its split draws differ)."""
import datetime
import gzip
import os
import platform
import struct
import sys

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


def load_splits(data_dir, seed):
    """(x, y) of the training split, the validation split and the test set, z-scored per image
    as `load_train_split` does; images (n, 784) float32, labels int64."""
    def zscore(images):
        images = images.reshape(len(images), -1).astype(np.float64)
        mean = images.mean(axis=1, keepdims=True)
        std = images.std(axis=1, keepdims=True)
        return ((images - mean) / np.where(std < 1e-8, 1.0, std)).astype(np.float32)

    images = zscore(read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz")))
    labels = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(round(0.8 * len(images)))
    train, val = order[:cut], order[cut:]
    test_x = zscore(read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")))
    test_y = read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    return (images[train], labels[train]), (images[val], labels[val]), (test_x, test_y)


def machine():
    """Where and when a peer ran, with the same keys as `wgtrain bench --json`'s `machine`."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            fields = {}
            for line in f:
                if ":" in line:
                    key, value = line.split(":", 1)
                    fields.setdefault(key.strip(), value.strip())
        cpu = fields.get("model name", platform.processor() or "unknown")
        if "cpu family" in fields and "model" in fields:
            cpu += f" (family {fields['cpu family']}, model {fields['model']})"
    except OSError:
        cpu = platform.processor() or "unknown"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "os": platform.system().lower(),
        "arch": platform.machine(),
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def print_machine(m):
    print(f"machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['os']} {m['arch']}; "
          f"Python {m['python']}; {m['date']} UTC", flush=True)
