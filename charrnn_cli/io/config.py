"""Training configuration: typed dataclasses read from YAML and validated before any work.

Every key has a type, a default and a range check. Unknown keys, wrong types and values out of
range raise ConfigError with the dotted key's name (and the closest valid key for a likely typo).
Overrides come as dotted `section.key=value` strings whose values are parsed as YAML.

The YAML reader is PyYAML's safe loader with two changes: numbers in exponent form without a
dot (`1e-3`, which YAML 1.1 reads as a string) are floats, as in YAML 1.2; and a key given
twice in one mapping is an error naming both lines, not a silent last-one-wins.
"""

import dataclasses
import difflib
import math
import os
import re
import reprlib
import typing
from dataclasses import dataclass, field
from typing import Optional

import yaml


class ConfigError(ValueError):
    """A user error in a config file or override: the message names the key."""


# Bounds on what a config may hold: a config from someone else may nest deeply or expand aliases
# into billions of values (a "billion laughs"). A real config is two levels deep and a few dozen values.
MAX_DEPTH = 16
MAX_VALUES = 10_000
_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 60, 60


def short(value, limit=80):
    """repr(value) cut short, for a message; never walks more of a value than it shows.

    >>> short([[1, 2, [3, [4]]]] * 100, 30)
    '[[1, 2, [3, [...]]], [1, 2,...'
    """
    text = _repr.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cut(text, limit=60):
    """A name for a message, cut short. _cut("abc", 2) == 'a…'"""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_size(value, what="the config"):
    """ConfigError when `value` nests deeper than MAX_DEPTH or holds more than MAX_VALUES values
    (aliases counted as often as they are used); stops walking as soon as either is passed."""
    todo, seen = [(value, 0)], 0
    while todo:
        v, depth = todo.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what} nests deeper than {MAX_DEPTH} levels: not a charrnn config")
        if seen > MAX_VALUES:
            raise ConfigError(f"{what} holds more than {MAX_VALUES:,} values (nested lists or YAML aliases): "
                              f"not a charrnn config")
        if isinstance(v, dict):
            todo.extend((x, depth + 1) for kv in v.items() for x in kv)
        elif isinstance(v, (list, tuple)):
            todo.extend((x, depth + 1) for x in v)


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader, with YAML 1.2 floats (1e-3) and duplicate keys refused."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _compose_node(self, parent, index):
    """PyYAML's compose_node, with the depth bounded: its composer recurses once per level."""
    self._depth = getattr(self, "_depth", 0) + 1
    try:
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise ConfigError(f"{getattr(self, 'source_name', 'the config')} nests deeper than {MAX_DEPTH} levels "
                              f"at line {mark.line + 1}: not a charrnn config")
        return yaml.SafeLoader.compose_node(self, parent, index)
    finally:
        self._depth -= 1


_Loader.compose_node = _compose_node


def _mapping_without_duplicates(loader, node):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, (str, int, float, bool, type(None))):
            raise ConfigError(f"line {key_node.start_mark.line + 1} of {getattr(loader, 'source_name', 'the config')}"
                              f": a key must be a name, not a {type(key).__name__}")
        if key in seen:
            raise ConfigError(f"duplicate key {short(key)}: lines {seen[key] + 1} and {key_node.start_mark.line + 1}"
                              f" of {getattr(loader, 'source_name', 'the config')} (the last would win silently)")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_yaml(text_or_stream, source_name="the config"):
    """yaml.safe_load with the two changes above. parse_yaml("lr: 1e-3") == {'lr': 0.001}"""
    loader = _Loader(text_or_stream)
    loader.source_name = source_name
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    check_size(data, source_name)
    return data


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
    dropout: float = _f(0.4, "inverted dropout on each layer's output in training",
                        *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    init: str = _f("pytorch", "weight init: pytorch (U(+-1/sqrt(H))) | normal (N(0, init_scale^2)) | xavier",
                   *(lambda v: v in ("pytorch", "normal", "xavier"), "must be one of pytorch, normal, xavier"))
    init_scale: Optional[float] = _f(None, "std for init: normal (default 0.01); multiplier for xavier",
                                     *_positive)
    forget_bias: float = _f(0.0, "added to the LSTM forget-gate bias at init")


@dataclass
class TrainingConfig:
    batch_size: int = _f(32, "parallel streams per step", *_up_to(1 << 20))
    seq_length: int = _f(64, "characters per stream per step (truncated BPTT length)", *_up_to(1 << 20))
    optimizer: str = _f("adam", "adam | rmsprop | adagrad | sgd",
                        *(lambda v: v in ("adam", "rmsprop", "adagrad", "sgd"),
                          "must be one of adam, rmsprop, adagrad, sgd"))
    learning_rate: float = _f(0.004, "peak learning rate", *_positive)
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
    warmup_steps: int = _f(0, "linear warm-up from 0 over this many steps", *_non_negative)
    grad_clip: float = _f(5.0, "clip threshold; 0 turns clipping off", *_non_negative)
    clip_mode: str = _f("norm", "norm: scale all gradients to global norm <= grad_clip; value: clamp each element",
                        *(lambda v: v in ("norm", "value"), "must be one of norm, value"))
    beta1: float = _f(0.9, "adam: first-moment decay", *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    beta2: float = _f(0.999, "adam: second-moment decay", *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    alpha: float = _f(0.99, "rmsprop: squared-gradient decay", *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    momentum: float = _f(0.9, "sgd: momentum", *(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"))
    eps: float = _f(1e-8, "adam, rmsprop, adagrad: denominator epsilon", *_positive)
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
    if t.unit_split and cfg.model.hidden_size % t.unit_split:
        raise ConfigError(f"training.unit_split: {t.unit_split} processes cannot share model.hidden_size "
                          f"{cfg.model.hidden_size} units evenly: use a divisor of it (1: one process)")
    return cfg


def default_output_dir(data_path):
    """runs/NAME for a text NAME.EXT. default_output_dir("data/tinyshakespeare.txt") == 'runs/tinyshakespeare'"""
    stem = os.path.splitext(os.path.basename(os.path.normpath(data_path)))[0] or "text"
    return os.path.join("runs", stem)


def is_config_path(path):
    """A .yaml / .yml path is a config; anything else is a text file to train on."""
    return str(path).lower().endswith((".yaml", ".yml"))


def own_text_config(text_path, overrides=()):
    """The config `charrnn train TEXT_FILE` uses: the defaults (the default model) on that file, into
    runs/<its name>; in lines mode (--lines) a model and stop rule sized to the list (sized_for_list),
    under any --set."""
    raw = apply_overrides({"data": {"path": text_path}}, overrides)
    if raw["data"].get("mode") == "lines":
        try:
            size = os.path.getsize(text_path)
        except OSError:
            size = 0  # resolve_data_path says what is wrong with the path
        raw = apply_overrides(sized_for_list(size), overrides)
        raw["data"]["path"] = raw["data"].get("path", text_path)
    return from_dict(raw)


def sized_for_list(n):
    """The model and stop rule for a list of items of about n characters (lines mode), as a raw
    config. A list of a few thousand words holds a few tens of thousands of characters: the default
    model (2x384, 10 minutes) memorises it after its first validation, where a 1x128 LSTM stopped by
    patience reaches a lower loss in seconds; validation comes about three times an epoch, so the
    best point is caught, and patience ends the run once validation stops improving.

    >>> sized_for_list(40_000)["model"], sized_for_list(40_000)["training"]["eval_every"]
    ({'hidden_size': 128, 'num_layers': 1, 'dropout': 0.1}, 26)
    """
    if n < 200_000:
        model, B, T, lr = {"hidden_size": 128, "num_layers": 1, "dropout": 0.1}, 16, 32, 0.005
    elif n < 2_000_000:
        model, B, T, lr = {"hidden_size": 256, "num_layers": 1, "dropout": 0.2}, 32, 64, 0.004
    else:
        model, B, T, lr = {}, 32, 64, 0.004  # the default model
    eval_every = int(min(max(round(n / (B * T) / 3), 10), 400))
    return {"data": {"mode": "lines"}, "model": model,
            "training": {"batch_size": B, "seq_length": T, "learning_rate": lr, "patience": 8,
                         "eval_every": eval_every, "checkpoint_every": max(eval_every, 100),
                         "log_every": min(eval_every, 20)}}


def bundled_folder(kind):
    """The folder of the bundled `configs` or `data`: inside the installed package, or beside it
    in a clone of the repository (where an editable install finds them)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package: charrnn_cli/
    for folder in (os.path.join(here, kind), os.path.join(os.path.dirname(here), kind)):
        if os.path.isdir(folder):
            return folder
    return None


def bundled_configs():
    """{name: path} of the configs that ship with charrnn (`charrnn train NAME`)."""
    folder = bundled_folder("configs")
    if folder is None:
        return {}
    return {f[:-5]: os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".yaml")}


def bundled_summary(path):
    """A bundled config's first comment line, its one-line description."""
    with open(path, encoding="utf-8") as fh:
        first = fh.readline().strip()
    return first.lstrip("# ") if first.startswith("#") else ""


def find_target(target):
    """(the path `charrnn train TARGET` means, a note or None). A file that exists wins; else a
    bundled config's name (NAME, NAME.yaml or configs/NAME.yaml) means the bundled config.

    >>> find_target("tiny")[0].endswith(os.path.join("configs", "tiny.yaml"))
    True
    """
    if target is None:
        return None, None
    bundled = bundled_configs()
    name = os.path.basename(target)
    name = name[:-5] if name.endswith(".yaml") else name
    if os.path.exists(target):
        if name in bundled and not is_config_path(target) and os.path.isfile(target):
            return target, (f"note: training on the file {target} found here; the bundled config of that name is "
                            f"charrnn train {bundled[name]}")
        return target, None
    if name in bundled and (target == name or os.path.normpath(os.path.dirname(target)) in ("configs", ".", "")):
        return bundled[name], f"using the bundled config {name} ({bundled[name]})"
    return target, None


def config_for(target, overrides=(), resume=None):
    """The config `charrnn train TARGET` trains with: a YAML file's, or the own-text default on a
    text file; overrides applied, data.path found (resolve_data_path).

    On --resume without a YAML file the base is the run's own config, stored in the checkpoint, so a
    run started with `--set` goes on as it was, without the user repeating them: TARGET None keeps
    its data.path, a TEXT_FILE replaces it."""
    if target is not None and is_config_path(target):
        return resolve_data_path(load_config(target, overrides), target)
    if resume is None:
        return resolve_data_path(own_text_config(target, overrides))
    raw = stored_config(resume)
    try:
        from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{resume}: the stored config is invalid: {e}") from None
    if target is not None:
        raw["data"]["path"] = target
    raw["data"]["cache_dir"] = None  # a checkpoint's paths never choose where files are written
    cfg = from_dict(apply_overrides(raw, overrides))
    if target is not None or overridden(overrides, "data.path"):
        return resolve_data_path(cfg)
    try:
        return resolve_data_path(cfg, resume)  # from here, else from the checkpoint's folder upwards
    except ConfigError:
        raise ConfigError(f"the run's text {cfg.data.path} is not found from here or above {resume}: "
                          f"name it, charrnn train TEXT_FILE --resume {resume}") from None


def resume_path(path):
    """The checkpoint --resume PATH names: PATH, or for a run folder its latest.npz (where the run
    stands); None for None."""
    if path is None:
        return None
    path = os.fspath(path)
    return os.path.join(path, "latest.npz") if os.path.isdir(path) else path


def stored_config(path):
    """The config dict a checkpoint stores (its config_json array), read with the standard library:
    `charrnn train --resume` needs the model's size to plan the threads before NumPy loads.

    A checkpoint is an .npz (a zip of .npy files); config_json.npy holds one little-endian unicode
    string: the magic, a version, the header's length and a header that is a Python dict literal,
    then UTF-32 text (the .npy format, numpy.lib.format)."""
    import ast
    import json
    import zipfile

    bad = f"{path}: not a charrnn checkpoint"
    try:
        with zipfile.ZipFile(path) as z:
            blob = z.read("config_json.npy")
        if blob[:6] != b"\x93NUMPY":
            raise ConfigError(f"{bad} (config_json is not an .npy array)")
        size = 2 if blob[6] == 1 else 4  # format 1.0: a 2-byte header length; 2.0 and 3.0: 4 bytes
        start = 8 + size
        end = start + int.from_bytes(blob[8:start], "little")
        header = ast.literal_eval(blob[start:end].decode("utf-8"))
        if not re.fullmatch(r"<U\d+", str(header.get("descr"))) or header.get("shape") != ():
            raise ConfigError(f"{bad} (config_json should be a single string)")
        raw = json.loads(blob[end:].decode("utf-32-le").rstrip("\0"))
    except ConfigError:
        raise
    except FileNotFoundError:
        raise ConfigError(f"checkpoint not found: {path}") from None
    except KeyError:
        raise ConfigError(f"{bad} (it has no config_json)") from None
    except (zipfile.BadZipFile, OSError, ValueError, SyntaxError, AttributeError, IndexError) as e:
        raise ConfigError(f"{bad} ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise ConfigError(f"{bad} (its stored config has no data section)")
    raw["data"].setdefault("min_count", 1)  # saved before data.min_count: it kept every character
    return raw


def locate(path, anchor=None):
    """Where a relative `path` named in a config or checkpoint is: as given (from the current
    folder), else from the folder of the file `anchor` (the config or checkpoint naming it) or one
    of the folders above it; None if nowhere. Every command finds a run's text this way."""
    if os.path.isabs(path) or os.path.exists(path) or anchor is None:
        return path if os.path.exists(path) else None
    folder = os.path.dirname(os.path.abspath(anchor))
    while True:
        candidate = os.path.join(folder, path)
        if os.path.exists(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def resolve_data_path(cfg, config_path=None):
    """Find data.path (locate): sets the found path; ConfigError if none."""
    found = locate(cfg.data.path, config_path)
    if found is not None:
        cfg.data.path = found
        return cfg
    path = cfg.data.path
    if os.path.isabs(path) or config_path is None:
        raise ConfigError(f"data.path: file not found: {os.path.abspath(path)}")
    start = os.path.dirname(os.path.abspath(config_path))
    raise ConfigError(f"data.path: file not found: {path} (looked for {os.path.abspath(path)}, then in "
                      f"{start} and the folders above it: relative paths are tried from the current folder, "
                      f"then from the config file's folder upwards)")


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
