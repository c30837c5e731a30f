"""Checkpoints: one versioned .npz record holding everything needed to sample, score or resume.

Arrays (all load with numpy.load(path, allow_pickle=False)):

    format_version     ()        int64, FORMAT_VERSION
    config_json        ()        str, the full resolved config as JSON
    vocab              (V,)      int64 Unicode code points, sorted; index i is chr(vocab[i])
    rnn.* / decoder.*            the parameters under PyTorch's state_dict names (model.py)
    optim.name, optim.t          the optimizer and its update count
    optim.<slot>.<p>             optimizer state (optim.py), internal parameter names and shapes
    train.step, train.epoch, train.offset, train.chars_seen, train.elapsed_s, train.best_val
    train.lr_anchor    (2,)      the cosine schedule's anchor (f0, r0), (0, 0) unless a resume moved its horizon
    train.eval_chars   ()        validation characters scored each time (0: not decided yet)
    train.layout       (2,)      data-parallel processes and processes sharing each step (unit_split)
    data.length, data.sha1       characters and SHA-1 of the encoded text trained on (to see it changed)
    state.h, state.c   (L, B, H) the hidden state carried into the next chunk (c for LSTM only)
    rng_state          ()        str, JSON of the dropout generator's bit_generator.state
    history.train      (n, 4)    step, chars_seen, elapsed_s, train loss (nats/char)
    history.val        (m, 4)    step, chars_seen, elapsed_s, validation loss (nats/char)

Version 2 holds the optimizer state of the weight matrices in PyTorch's (out, in) shape, the
model's internal layout since then; version 1 held it transposed and is converted on load.

Writes are atomic: a temporary file in the same folder is written, flushed and fsynced, then
renamed over the target, so a crash at any moment leaves the previous file intact.

Reads are checked before use (`check_arrays`): every array present has the shape and dtype the
stored config implies, integers where integers belong, the generator state is JSON a generator
accepts. A damaged or hand-edited file gives a CheckpointError naming the array and what is wrong.
Non-finite parameters are reported apart (`nonfinite_parameters`): `info` shows them, the commands
that use the model refuse.
"""

import json
import math
import os

import numpy as np

from . import config as config_mod
from ..nn.cells import make_cell
from .files import atomic_write
from .npz import MAX_VOCAB_BYTES, SMALL, Members, NpzError
from .yaml_reader import short
from ..nn.model import CharRNN
from ..nn.params import PUBLIC, layer_prefixes, state_dict_names
from ..nn.optim import OPTIMIZERS
from .vocab import Vocab

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED = ("format_version", "config_json", "vocab")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message says why."""


def atomic_save_npz(path, arrays):
    """np.savez to `path` through a temporary file in the same folder, fsynced, then renamed."""
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


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
            self.config = config_mod.from_dict(config_mod.as_trained(json.loads(str(arrays["config_json"]))))
        except RecursionError:
            raise CheckpointError(f"{path}: the stored config nests too deeply to be a charrnn config") from None
        except (ValueError, config_mod.ConfigError) as e:
            raise CheckpointError(f"{path}: the stored config is invalid: {e}") from None
        self.nonfinite = []
        v = arrays["vocab"]
        if v.ndim != 1 or len(v) == 0 or (v < 0).any() or (v >= 0x110000).any() or (np.diff(v) <= 0).any():
            raise CheckpointError(f"{path}: array vocab should be sorted, distinct Unicode code points")
        surrogates = v[(v >= 0xD800) & (v <= 0xDFFF)]
        if surrogates.size:  # no UTF-8 text holds them, and no terminal can print them
            raise CheckpointError(f"{path}: array vocab holds a lone surrogate (U+{int(surrogates[0]):04X}), "
                                  f"which is not a character of any text")
        try:
            self.vocab = Vocab(v)
        except (AssertionError, ValueError, OverflowError):
            raise CheckpointError(f"{path}: array vocab should be sorted, distinct Unicode code points") from None

    def get(self, name, default=None):
        return self.arrays.get(name, default)

    def scalar(self, name, default=None):
        v = self.arrays.get(name)
        return default if v is None else v.item()

    def build_model(self, dtype=np.float32):
        """The model with the stored parameters."""
        m = self.config.model
        model = CharRNN(m.type, len(self.vocab), m.hidden_size, m.num_layers, m.dropout, dtype=dtype,
                        layer_norm=m.layer_norm, embedding=m.embedding)
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


def _expected_shapes(cfg, V):
    """{PyTorch name: shape} and {internal name: shape} of the parameters `cfg` describes."""
    m = cfg.model
    G, H = make_cell(m.type).gates, m.hidden_size
    torch_names, internal = {}, {}
    for k in range(m.num_layers):
        n_in = (m.embedding or V) if k == 0 else H
        for n in layer_prefixes(m.layer_norm):
            shape = {"Wx": (G * H, n_in), "Wh": (G * H, H)}.get(n, (G * H,))  # the rest: a vector a gate row
            torch_names[PUBLIC[n].format(k)] = internal[f"{n}{k}"] = shape
    torch_names["decoder.weight"] = internal["Wy"] = (V, H)
    torch_names["decoder.bias"] = internal["by"] = (V,)
    if m.embedding:
        torch_names["encoder.weight"] = internal["E"] = (V, m.embedding)
    return torch_names, internal


def _kind(a):
    return "float" if a.dtype.kind == "f" else "integer" if a.dtype.kind in "iu" else \
        "string" if a.dtype.kind == "U" else a.dtype.name


def check_arrays(path, arrays, cfg, vocab):
    """Raise CheckpointError naming the first array whose shape, dtype or content is not what
    the stored config and vocabulary imply. Parameters' finiteness is checked apart."""

    def bad(name, what):
        raise CheckpointError(f"{path}: array {name} {what}")

    torch_shapes, internal = _expected_shapes(cfg, len(vocab))
    _check_parameters(arrays, torch_shapes, len(vocab), bad)
    _check_progress(arrays, cfg, bad)
    _check_optimizer(arrays, internal, bad)
    _check_state(arrays, cfg, bad)


def _check_parameters(arrays, shapes, V, bad):
    for name, shape in shapes.items():
        a = arrays[name]
        if a.dtype.kind != "f":
            bad(name, f"should hold floats, holds {_kind(a)} values")
        if a.shape != shape:
            hint = " (transposed?)" if a.shape == shape[::-1] else ""
            why = f" for {V} characters" if name.startswith(("decoder", "encoder")) or (
                name == "rnn.weight_ih_l0" and shape[1] == V) else ""  # with an embedding its columns are D
            bad(name, f"has shape {a.shape}, expected {shape}{why}{hint}")


def _check_scalar(arrays, name, kind, bad):
    if name not in arrays:
        return
    a = arrays[name]
    if a.shape != ():
        bad(name, f"should be a single {kind}, has shape {a.shape}")
    if kind == "integer" and a.dtype.kind not in "iu":
        bad(name, f"should be an integer, is a {_kind(a)} ({short(a.item())})")
    if kind == "number" and a.dtype.kind not in "iuf":
        bad(name, f"should be a number, is a {_kind(a)} ({short(a.item())})")
    if kind == "string" and a.dtype.kind != "U":
        bad(name, f"should be a string, is a {_kind(a)}")
    if kind == "integer" and a.item() < 0:
        bad(name, f"should be >= 0, is {a.item()}")


def _check_progress(arrays, cfg, bad):
    """The progress scalars: of their kind, and in range (a finite elapsed time, an offset inside
    the streams)."""
    for name in ("train.step", "train.epoch", "train.offset", "train.chars_seen", "optim.t", "train.eval_chars",
                 "data.length"):
        _check_scalar(arrays, name, "integer", bad)
    for name in ("train.elapsed_s", "train.best_val"):
        _check_scalar(arrays, name, "number", bad)
    for name in ("config_json", "optim.name", "rng_state", "data.sha1"):
        _check_scalar(arrays, name, "string", bad)
    if "train.layout" in arrays:
        a = arrays["train.layout"]
        if a.shape != (2,) or a.dtype.kind not in "iu" or (a < 1).any():
            bad("train.layout", f"should be 2 positive integers (processes, unit_split), is {short(a.tolist())}")
    a = arrays.get("train.lr_anchor")
    if a is not None and (a.shape != (2,) or a.dtype.kind != "f"):
        bad("train.lr_anchor", f"should be 2 floats, is {a.shape} {_kind(a)}")
    if "train.elapsed_s" in arrays and not (math.isfinite(x := float(arrays["train.elapsed_s"])) and x >= 0):
        bad("train.elapsed_s", f"should be a finite number >= 0, is {x}")
    if "train.best_val" in arrays and math.isinf(x := float(arrays["train.best_val"])):
        bad("train.best_val", f"should be finite (or NaN: none yet), is {x}")
    if "train.offset" in arrays and "data.length" in arrays:
        most = int(arrays["data.length"]) // cfg.training.batch_size
        if int(arrays["train.offset"]) > most:
            bad("train.offset", f"is {int(arrays['train.offset']):,}, past the end of every stream "
                                f"({most:,} characters each, from data.length and batch_size)")


def _check_optimizer(arrays, internal, bad):
    if "optim.name" not in arrays:
        return
    opt = str(arrays["optim.name"])
    if opt not in OPTIMIZERS:
        bad("optim.name", f"names no known optimizer: {short(opt)}")
    for slot in OPTIMIZERS[opt].slots:
        for pname, shape in internal.items():
            name = f"optim.{slot}.{pname}"
            if name not in arrays:
                bad(name, f"is missing ({opt} keeps it)")
            a = arrays[name]
            if a.dtype.kind != "f" or a.shape != shape:
                bad(name, f"should be {shape} floats, is {a.shape} {_kind(a)}")


def _check_state(arrays, cfg, bad):
    """The carried state, the history and the dropout generator."""
    L, B, H = cfg.model.num_layers, cfg.training.batch_size, cfg.model.hidden_size
    for sname in make_cell(cfg.model.type).state_names:
        a = arrays.get(f"state.{sname}")
        if a is not None and (a.dtype.kind != "f" or a.shape != (L, B, H)):
            bad(f"state.{sname}", f"should be (layers, batch_size, hidden_size) = {(L, B, H)} floats, is {a.shape} "
                                  f"{_kind(a)}")
    for name in ("history.train", "history.val"):
        a = arrays.get(name)
        if a is not None and (a.dtype.kind not in "iuf" or a.ndim != 2 or a.shape[1] != 4):
            bad(name, f"should be (n, 4) numbers (step, chars_seen, elapsed_s, loss), is {a.shape} {_kind(a)}")
    if "rng_state" in arrays:
        try:
            state = json.loads(str(arrays["rng_state"]))
            np.random.default_rng().bit_generator.state = state
        except (ValueError, TypeError, KeyError, RecursionError, OverflowError):
            bad("rng_state", "is not a random generator state (JSON of bit_generator.state)")


def nonfinite_parameters(arrays):
    """Names of the parameter arrays holding NaN or infinite values."""
    return [n for n, a in arrays.items() if n.startswith(("rnn.", "decoder.")) and not np.isfinite(a).all()]


def _upgrade_v1(arrays):
    """Version 1 stored the optimizer state of weight matrices as (in, out): transpose it to (out, in)."""
    for name in list(arrays):
        if name.startswith("optim.") and arrays[name].ndim == 2:
            arrays[name] = np.ascontiguousarray(arrays[name].T)
    arrays["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)


def saved_step(path):
    """The step a checkpoint was saved at, read alone rather than the whole file; None if it
    cannot be read (load says why, where that matters)."""
    try:
        with Members(path) as members:
            a = members.read("train.step", 64)
        return int(a) if a is not None and a.shape == () and a.dtype.kind in "iu" else None
    except (CheckpointError, NpzError, OSError):
        return None


# Bounds on what a load reads, before the config says more: a checkpoint from someone else may
# claim any size in an array's header, or hold a member that inflates to gigabytes.
def _limits(cfg, V, step):
    """{array name: most bytes it may hold} for a checkpoint of `cfg` with V characters at `step`
    (8 bytes an element: float64 or int64 at most)."""
    torch_shapes, internal = _expected_shapes(cfg, V)
    limits = {name: 8 * math.prod(shape) for name, shape in torch_shapes.items()}
    for name in ("optim.name", "rng_state", "data.sha1", "optim.t", "data.length", "train.lr_anchor", "train.layout") + tuple(
            f"train.{k}" for k in ("step", "epoch", "offset", "chars_seen", "elapsed_s", "best_val", "eval_chars")):
        limits[name] = SMALL
    for opt in OPTIMIZERS.values():
        for slot in opt.slots:
            for pname, shape in internal.items():
                limits[f"optim.{slot}.{pname}"] = 8 * math.prod(shape)
    L, B, H = cfg.model.num_layers, cfg.training.batch_size, cfg.model.hidden_size
    for sname in make_cell(cfg.model.type).state_names:
        limits[f"state.{sname}"] = 8 * L * B * H
    rows = 2 * (max(int(step), 0) + 1) + 16  # a line of history a step at most, and a final validation
    limits["history.train"] = limits["history.val"] = 8 * 4 * rows
    return limits


def _read_all(path):
    """The arrays of a checkpoint, each bounded: the small ones first, then the rest by the sizes the
    stored config implies. Members charrnn does not know are not read."""
    with Members(path) as members:
        arrays = {}
        for name, limit in (("format_version", SMALL), ("config_json", SMALL), ("vocab", MAX_VOCAB_BYTES),
                            ("train.step", SMALL)):
            a = members.read(name, limit)
            if a is not None:
                arrays[name] = a
        _check_head(path, arrays)
        ck = Checkpoint(path, arrays)  # parses the config and vocabulary
        step = arrays.get("train.step")
        step = int(step) if step is not None and step.shape == () and step.dtype.kind in "iu" else 0
        for name, limit in _limits(ck.config, len(ck.vocab), step).items():
            if name not in arrays:
                a = members.read(name, limit)
                if a is not None:
                    arrays[name] = a
    return ck


def _check_head(path, arrays):
    """format_version, config_json and vocab: present and of the right kind."""
    if "format_version" not in arrays:
        raise CheckpointError(f"{path} is not a charrnn checkpoint (no format_version array)")
    v = arrays["format_version"]
    if v.shape != () or v.dtype.kind not in "iu":
        raise CheckpointError(f"{path}: format_version should be a single integer, is {short(v.tolist())}")
    version = int(v)
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{path} has checkpoint format version {version}; "
                              f"this charrnn reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    missing = [n for n in REQUIRED if n not in arrays]
    if missing:
        raise CheckpointError(f"{path} is missing arrays: {', '.join(missing)}")
    if arrays["vocab"].dtype.kind not in "iu":
        raise CheckpointError(f"{path}: array vocab should hold integer code points, holds "
                              f"{_kind(arrays['vocab'])} values")
    if arrays["config_json"].shape != () or arrays["config_json"].dtype.kind != "U":
        raise CheckpointError(f"{path}: array config_json should be a single string")


def load(path, allow_nonfinite=False):
    """Read and check a checkpoint; raises CheckpointError with a clear reason.

    Parameters holding NaN or infinity are refused unless allow_nonfinite (for `info`)."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        inside = [os.path.join(path, f) for f in ("best.npz", "latest.npz") if os.path.exists(os.path.join(path, f))]
        raise CheckpointError(f"checkpoint path is a directory: {path}"
                              + (f" (a run folder: give one of its checkpoints, {' or '.join(inside)})" if inside else ""))
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is not a regular file (a pipe or a device?): give a checkpoint file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if magic[:2] != b"PK":
        raise CheckpointError(f"{path} is not a charrnn checkpoint (not an .npz file)")
    try:
        ck = _read_all(path)
    except NpzError as e:
        raise CheckpointError(str(e)) from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    arrays = ck.arrays
    if int(arrays["format_version"]) == 1:
        _upgrade_v1(arrays)
    m = ck.config.model
    missing = [n for n in state_dict_names(m.num_layers, m.layer_norm, m.embedding) if n not in arrays]
    if missing:
        raise CheckpointError(f"{path} is missing parameter arrays: {', '.join(missing[:8])}"
                              + (f" and {len(missing) - 8:,} more" if len(missing) > 8 else ""))
    check_arrays(path, arrays, ck.config, ck.vocab)
    ck.nonfinite = nonfinite_parameters(arrays)
    if ck.nonfinite and not allow_nonfinite:
        raise CheckpointError(f"{path}: the parameters hold NaN or infinite values ({', '.join(ck.nonfinite)}); "
                              f"the run diverged before this was saved: use an earlier checkpoint")
    return ck
