"""Training configuration: typed dataclasses read from YAML and validated before any work.

Every key has a type, a default and a range check. Unknown keys, wrong types and values out of
range raise ConfigError with the dotted key's name (and the closest valid key for a likely typo).
Overrides come as dotted `section.key=value` strings whose values are parsed as YAML.

YAML is read by yaml_reader.py (bounded, duplicate keys refused, `1e-3` a number); what a
command trains on, and where a relative path is found, is targets.py's.
"""

import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Optional

import yaml

from .yaml_reader import ConfigError, _cut, check_size, parse_yaml, short


def _f(default, help, check=None, why=""):
    return field(default=default, metadata={"help": help, "check": check, "why": why})


MAX_INT = 2 ** 62  # every integer fits NumPy's int64 with room to add
_positive = (lambda v: v > 0, "must be > 0")
_not_empty = (lambda v: v.strip() != "", "must not be empty")


def _up_to(hi):
    return (lambda v: 0 < v <= hi, f"must be > 0 and at most {hi:,}")
_non_negative = (lambda v: v >= 0, "must be >= 0")


@dataclass
class DataConfig:
    path: str = _f("data/tinyshakespeare.txt", "UTF-8 text file to train on (a relative path is tried from the "
                   "current folder, then from the config file's folder and the folders above it)", *_not_empty)
    val_fraction: float = _f(0.1, "fraction at the end of the file held out for validation",
                             *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    cache_dir: Optional[str] = _f(None, "where the encoded text is cached; null: OUTPUT_DIR/data_cache",
                                  *_not_empty)
    min_count: int = _f(5, "characters seen fewer than this many times in the text are folded into one unknown "
                        "symbol, U+FFFD, which sampling never draws and eval scores as 'a rare character' (1: keep "
                        "every character)", *_positive)
    mode: str = _f("stream", "stream: the file is one text, the state carried across lines; lines: each non-empty "
                   "line is an item, read from a zero state with the newline as its start and end marker",
                   *(lambda v: v in ("stream", "lines"), "must be one of stream, lines"))


@dataclass
class ModelConfig:
    type: str = _f("lstm", "cell type: rnn | lstm | gru",
                   *(lambda v: v in ("rnn", "lstm", "gru"), "must be one of rnn, lstm, gru"))
    hidden_size: int = _f(384, "units per layer", *_up_to(65_536))
    num_layers: int = _f(2, "stacked recurrent layers", *_up_to(1_024))
    dropout: float = _f(0.2, "inverted dropout on each layer's output in training",
                        *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    init: str = _f("pytorch", "weight init: pytorch (U(+-1/sqrt(H))) | normal (N(0, init_scale^2)) | xavier",
                   *(lambda v: v in ("pytorch", "normal", "xavier"), "must be one of pytorch, normal, xavier"))
    init_scale: Optional[float] = _f(None, "std for init: normal (default 0.01); multiplier for xavier",
                                     *_positive)
    forget_bias: float = _f(0.0, "added to the LSTM forget-gate bias at init")
    embedding: int = _f(0, "each character enters as a learned vector of this many numbers (an nn.Embedding, "
                        "encoder.weight, before layer 0's W_ih); 0: one-hot, so W_ih's columns are the embedding",
                        *(lambda v: 0 <= v <= 65_536, "must be >= 0 and at most 65,536"))
    weight_drop: float = _f(0.0, "training only: each step drops each recurrent weight (W_hh) with this probability "
                            "and scales the rest by 1 / (1 - p), one mask for every stream and time step "
                            "(DropConnect, as in AWD-LSTM)", *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    layer_norm: bool = _f(False, "LSTM: normalise each gate's pre-activation over the layer's units, then scale and "
                          "shift it per unit (Ba et al. 2016); trains in one process (training.unit_split 1)")


def model_options(m):
    """The model options a config turns on, as words for a line ("" when none): ", an input embedding of 32"."""
    on = [f"an input embedding of {m.embedding}" if m.embedding else "", "layer-normalised gates" if m.layer_norm else "",
          f"weight drop {m.weight_drop:g}" if m.weight_drop else ""]
    return "".join(f", {w}" for w in on if w)


@dataclass
class TrainingConfig:
    batch_size: int = _f(32, "parallel streams per step", *_up_to(1 << 20))
    seq_length: int = _f(64, "characters per stream per step (truncated BPTT length)", *_up_to(1 << 20))
    optimizer: str = _f("adam", "adam | rmsprop | adagrad | sgd",
                        *(lambda v: v in ("adam", "rmsprop", "adagrad", "sgd"),
                          "must be one of adam, rmsprop, adagrad, sgd"))
    learning_rate: float = _f(0.006, "peak learning rate", *_positive)
    lr_schedule: str = _f("cosine", "step: multiply by lr_decay every lr_decay_every steps; "
                          "cosine: cosine decay to learning_rate * lr_min_fraction over lr_decay_steps, "
                          "else max_steps, else max_minutes of wall time",
                          *(lambda v: v in ("step", "cosine"), "must be one of step, cosine"))
    lr_decay: float = _f(1.0, "step schedule: factor applied every lr_decay_every steps (1.0: constant)",
                         *(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"))
    lr_decay_every: int = _f(1000, "step schedule: steps between decays", *_positive)
    lr_decay_steps: Optional[int] = _f(None, "cosine schedule: steps to decay over (null: max_steps, else max_minutes)",
                                     *_positive)
    lr_min_fraction: float = _f(0.03, "cosine schedule: final learning rate as a fraction of the peak",
                                *(lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]"))
    warmup_steps: int = _f(200, "linear warm-up from 0 over this many steps (0: none)", *_non_negative)
    random_cuts: bool = _f(False, "each epoch's first chunk is 1 to seq_length characters long, drawn from the seed "
                           "and the epoch, so the points where backpropagation through time is cut move from one "
                           "epoch to the next")
    grad_clip: float = _f(5.0, "clip threshold; 0 turns clipping off", *_non_negative)
    clip_mode: str = _f("norm", "norm: scale all gradients to global norm <= grad_clip; value: clamp each element",
                        *(lambda v: v in ("norm", "value"), "must be one of norm, value"))
    beta1: float = _f(0.9, "adam: first-moment decay", *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    beta2: float = _f(0.999, "adam: second-moment decay", *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    alpha: float = _f(0.99, "rmsprop: squared-gradient decay", *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    momentum: float = _f(0.9, "sgd: momentum", *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    eps: float = _f(1e-8, "adam, rmsprop, adagrad: denominator epsilon", *_positive)
    weight_decay: float = _f(0.0, "every optimizer: each update first multiplies the weight matrices (not the "
                             "biases) by 1 - learning_rate * weight_decay, decoupled from the gradient as in AdamW",
                             *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    max_steps: Optional[int] = _f(None, "stop after this many steps", *_positive)
    max_epochs: Optional[float] = _f(None, "stop after this many passes over the training split", *_positive)
    max_minutes: Optional[float] = _f(10.0, "stop after this much wall time (null: no time limit)", *_positive)
    eval_every: int = _f(400, "steps between validation runs", *_positive)
    eval_max_chars: Optional[int] = _f(1_000_000, "score at most this many validation characters (null: all); "
                                       "keeps validation quick on multi-GB files",
                                       *_positive)
    eval_share: Optional[float] = _f(0.1, "largest share of the run's time spent validating: each validation "
                                     "scores at most the characters that fit this share of the training between "
                                     "two validations (fixed by the config, never by a clock) (null: no limit)",
                                     *(lambda v: 0.0 < v < 1.0, "must be in (0, 1)"))
    patience: Optional[int] = _f(None, "early stopping: stop when validation has not improved for this many "
                                 "evaluations (null: off)", *_positive)
    checkpoint_every: int = _f(200, "steps between writes of latest.npz", *_positive)
    log_every: int = _f(20, "steps between lines of metrics.jsonl", *_positive)
    seed: int = _f(42, "seeds the initialisation and dropout", *_non_negative)
    threads: Optional[int] = _f(None, "BLAS threads per process (null: the cores divided among unit_split's "
                                "processes); --threads overrides; set before NumPy starts, so it holds for the whole "
                                "run", *_positive)
    unit_split: Optional[int] = _f(None, "processes that share each training step, each computing its share of the "
                                   "hidden units on its own cores (null: 2 when this process may use 2 or more "
                                   "cores, hidden_size is even and at least 128, and the run is not an MPI job; "
                                   "1: one process)", *_positive)


@dataclass
class OutputConfig:
    dir: Optional[str] = _f(None, "run folder: checkpoints and metrics.jsonl (null: runs/NAME, NAME being "
                            "data.path's file name without its extension)", *_not_empty)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self):
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def _closest(name, options):
    m = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {m[0]!r}?)" if m else ""


def _unwrap_optional(tp):
    """(X, True) for Optional[X], (tp, False) otherwise. _unwrap_optional(Optional[int]) == (int, True)"""
    if typing.get_origin(tp) is typing.Union:
        return [a for a in typing.get_args(tp) if a is not type(None)][0], True
    return tp, False


def _check_type(key, value, tp):
    tp, nullable = _unwrap_optional(tp)
    if nullable and value is None:
        return None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {short(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {short(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{key}: expected an integer, got {short(value)}")
        if abs(value) >= MAX_INT:
            raise ConfigError(f"{key}: {short(value)} is too large (at most {MAX_INT - 1:,})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {short(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {short(value)}")
        if "\0" in value:
            raise ConfigError(f"{key}: a NUL character is not allowed in {short(value)}")
        return value
    raise AssertionError(tp)


def _build_section(name, raw):
    cls = SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {short(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"unknown key {name}.{_cut(str(key))}{_closest(str(key)[:100], fields)}")
        dotted = f"{name}.{key}"
        value = _check_type(dotted, value, hints[key])
        check, why = fields[key].metadata["check"], fields[key].metadata["why"]
        if value is not None and check is not None and not check(value):
            raise ConfigError(f"{dotted}: {why}, got {short(value)}")
        values[key] = value
    return cls(**values)


def from_dict(raw):
    """Build a validated Config from a plain dict (as read from YAML or JSON)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping with sections data, model, training, output")
    check_size(raw)
    for name in raw:
        if name not in SECTIONS:
            raise ConfigError(f"unknown section {short(name)}{_closest(str(name)[:100], SECTIONS)}")
    cfg = Config(**{name: _build_section(name, raw.get(name)) for name in SECTIONS})
    if cfg.output.dir is None:
        cfg.output.dir = default_output_dir(cfg.data.path)
    t = cfg.training
    if t.lr_schedule == "cosine" and t.lr_decay_steps is None and t.max_steps is None and t.max_minutes is None:
        raise ConfigError("training.lr_decay_steps: the cosine schedule needs lr_decay_steps, max_steps "
                          "or max_minutes")
    if t.unit_split and t.unit_split > 1 and not hasattr(os, "fork"):
        raise ConfigError("training.unit_split: this system cannot fork processes: use 1 (or null)")
    if cfg.model.layer_norm and cfg.model.type != "lstm":
        raise ConfigError(f"model.layer_norm: only the LSTM has it, not model.type {cfg.model.type}")
    if cfg.model.layer_norm and t.unit_split and t.unit_split > 1:
        raise ConfigError("training.unit_split: a layer-normalised model (model.layer_norm) trains in one process: "
                          "use 1 (or null)")
    if t.unit_split and cfg.model.hidden_size % t.unit_split:
        raise ConfigError(f"training.unit_split: {t.unit_split} processes cannot share model.hidden_size "
                          f"{cfg.model.hidden_size} units evenly: use a divisor of it (1: one process)")
    return cfg


def as_trained(raw):
    """A stored config (a checkpoint's) as its run trained: one saved before data.min_count kept every
    character. as_trained({"data": {}}) == {'data': {'min_count': 1}}"""
    if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
        raw["data"].setdefault("min_count", 1)
    return raw


def default_output_dir(data_path):
    """runs/NAME for a text NAME.EXT. default_output_dir("data/tinyshakespeare.txt") == 'runs/tinyshakespeare'"""
    stem = os.path.splitext(os.path.basename(os.path.normpath(data_path)))[0] or "text"
    return os.path.join("runs", stem)


def overridden(overrides, key):
    """Whether the `section.key=value` strings set the dotted `key`, read as apply_overrides reads them.

    >>> overridden(["output.dir = runs/b", "training.seed=7"], "output.dir")
    True
    """
    return any(item.split("=", 1)[0].strip() == key for item in overrides)


def apply_overrides(raw, overrides):
    """Apply `section.key=value` strings to a raw dict; values are parsed as YAML.

    >>> apply_overrides({}, ["training.seed=7"])
    {'training': {'seed': 7}}
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return raw  # from_dict reports the shape problem
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {short(item)}: expected section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {short(item)}: the key must look like section.key, e.g. training.seed")
        section, name = parts
        if section not in SECTIONS:
            raise ConfigError(f"--set: unknown section {short(section)}{_closest(section, SECTIONS)}")
        try:
            value = parse_yaml(text, "--set")
        except yaml.YAMLError:
            raise ConfigError(f"--set {short(item)}: the value is not valid YAML") from None
        sec = raw.get(section)
        if not isinstance(sec, dict):
            sec = {}
        sec[name] = value
        raw[section] = sec
    return raw


def load_config(path, overrides=()):
    """Read a YAML config file, apply overrides, validate. Raises ConfigError on any problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = parse_yaml(fh, path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory: {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file is not UTF-8 text: {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "could not be parsed"
        raise ConfigError(f"invalid YAML in {path}{where}: {problem}") from None
    return from_dict(apply_overrides(raw, overrides))


def describe():
    """Rows (dotted key, type, default, help) for every key: the README's config reference."""
    rows = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp, nullable = _unwrap_optional(hints[f.name])
            tname = tp.__name__ + (" or null" if nullable else "")
            rows.append((f"{section}.{f.name}", tname, f.default, f.metadata["help"]))
    return rows


def reference_table():
    """The README's config reference as a Markdown table, one row per key (a test keeps them equal)."""
    import json

    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, tname, default, help_text in describe():
        rows.append(f"| `{key}` | {tname} | `{json.dumps(default)}` | {help_text.replace('|', '&#124;')} |")
    return "\n".join(rows)
