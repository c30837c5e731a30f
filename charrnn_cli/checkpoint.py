"""Checkpoints: one versioned .npz record holding everything needed to sample, score or resume.

Arrays (all load with numpy.load(path, allow_pickle=False)):

    format_version     ()        int64, FORMAT_VERSION
    config_json        ()        str, the full resolved config as JSON
    vocab              (V,)      int64 Unicode code points, sorted; index i is chr(vocab[i])
    rnn.* / decoder.*            the parameters under PyTorch's state_dict names (model.py)
    optim.name, optim.t          the optimizer and its update count
    optim.<slot>.<p>             optimizer state (optim.py), internal parameter names and shapes
    train.step, train.epoch, train.offset, train.chars_seen, train.elapsed_s, train.best_val
    state.h, state.c   (L, B, H) the hidden state carried into the next chunk (c for LSTM only)
    rng_state          ()        str, JSON of the dropout generator's bit_generator.state
    history.train      (n, 4)    step, chars_seen, elapsed_s, train loss (nats/char)
    history.val        (m, 4)    step, chars_seen, elapsed_s, validation loss (nats/char)

Version 2 holds the optimizer state of the weight matrices in PyTorch's (out, in) shape, the
model's internal layout since then; version 1 held it transposed and is converted on load.

Writes are atomic: a temporary file in the same folder is written, flushed and fsynced, then
renamed over the target, so a crash at any moment leaves the previous file intact.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from . import config as config_mod
from .model import CharRNN, state_dict_names
from .vocab import Vocab

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED = ("format_version", "config_json", "vocab")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message says why."""


def atomic_save_npz(path, arrays):
    """np.savez to `path` through a temporary file in the same folder, fsynced, then renamed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def build_arrays(model, vocab, cfg, optimizer=None, progress=None, state=None, rng=None, history=None):
    """The checkpoint record as a dict of arrays."""
    arrays = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "config_json": np.array(json.dumps(cfg.to_dict())),
        "vocab": np.asarray(vocab.codepoints, dtype=np.int64),
    }
    arrays.update(model.state_dict())
    if optimizer is not None:
        arrays.update(optimizer.state_arrays())
    for k, v in (progress or {}).items():
        arrays[f"train.{k}"] = np.array(v)
    if state is not None:
        for name, s in zip(model.cell.state_names, state):
            arrays[f"state.{name}"] = s
    if rng is not None:
        arrays["rng_state"] = np.array(json.dumps(rng.bit_generator.state))
    if history is not None:
        for name, rows in history.items():
            arrays[f"history.{name}"] = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return arrays


class Checkpoint:
    """A loaded checkpoint: its arrays in memory, the config, vocabulary and a model builder."""

    def __init__(self, path, arrays):
        self.path = path
        self.arrays = arrays
        try:
            self.config = config_mod.from_dict(json.loads(str(arrays["config_json"])))
        except (ValueError, config_mod.ConfigError) as e:
            raise CheckpointError(f"{path}: the stored config is invalid: {e}") from None
        try:
            self.vocab = Vocab(arrays["vocab"])
        except (AssertionError, ValueError, OverflowError):
            raise CheckpointError(f"{path}: the stored vocabulary is invalid") from None

    def get(self, name, default=None):
        return self.arrays.get(name, default)

    def scalar(self, name, default=None):
        v = self.arrays.get(name)
        return default if v is None else v.item()

    def build_model(self, dtype=np.float32):
        """The model with the stored parameters."""
        m = self.config.model
        model = CharRNN(m.type, len(self.vocab), m.hidden_size, m.num_layers, m.dropout, dtype=dtype)
        try:
            model.load_state_dict(self.arrays)
        except ValueError as e:
            raise CheckpointError(f"{self.path}: {e}") from None
        return model

    def state(self, model):
        """The carried hidden state, or None when the checkpoint has none."""
        names = model.cell.state_names
        if not all(f"state.{n}" in self.arrays for n in names):
            return None
        return tuple(np.array(self.arrays[f"state.{n}"], dtype=model.dtype) for n in names)

    def rng(self):
        text = self.arrays.get("rng_state")
        rng = np.random.default_rng()
        if text is not None:
            rng.bit_generator.state = json.loads(str(text))
        return rng

    def history(self, name):
        rows = self.arrays.get(f"history.{name}")
        return np.zeros((0, 4)) if rows is None else rows


def _upgrade_v1(arrays):
    """Version 1 stored the optimizer state of weight matrices as (in, out): transpose it to (out, in)."""
    for name in list(arrays):
        if name.startswith("optim.") and arrays[name].ndim == 2:
            arrays[name] = np.ascontiguousarray(arrays[name].T)
    arrays["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)


def load(path):
    """Read and check a checkpoint; raises CheckpointError with a clear reason."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory: {path}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if magic[:2] != b"PK":
        raise CheckpointError(f"{path} is not a charrnn checkpoint (not an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            arrays = {n: npz[n] for n in names}
    except (zipfile.BadZipFile, EOFError):
        raise CheckpointError(f"{path} is not a charrnn checkpoint (not a complete .npz file)") from None
    except ValueError:
        raise CheckpointError(f"{path} is not a charrnn checkpoint (an .npz holding object arrays)") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except Exception as e:  # a damaged member: CRC or decompression errors
        raise CheckpointError(f"{path} is corrupt ({type(e).__name__}: {e})") from None
    if not isinstance(arrays, dict) or "format_version" not in arrays:
        raise CheckpointError(f"{path} is not a charrnn checkpoint (no format_version array)")
    try:
        version = int(arrays["format_version"])
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: format_version is not an integer") from None
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{path} has checkpoint format version {version}; "
                              f"this charrnn reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    if version == 1:
        _upgrade_v1(arrays)
    missing = [n for n in REQUIRED if n not in arrays]
    if missing:
        raise CheckpointError(f"{path} is missing arrays: {', '.join(missing)}")
    ck = Checkpoint(path, arrays)
    missing = [n for n in state_dict_names(ck.config.model.num_layers) if n not in arrays]
    if missing:
        raise CheckpointError(f"{path} is missing parameter arrays: {', '.join(missing)}")
    return ck
