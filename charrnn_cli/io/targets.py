"""What `charrnn train TARGET` trains: a YAML file, a text file with the default model, a bundled
config by name, or a run's own config stored in a checkpoint (read without NumPy); and where a
relative path a config or checkpoint names is found (`locate`, the one lookup every command uses)."""

import os
import re

from .config import ConfigError, apply_overrides, as_trained, from_dict, load_config, overridden


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
            "training": {"batch_size": B, "seq_length": T, "learning_rate": lr, "warmup_steps": 0, "patience": 8,
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
    return as_trained(raw)


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
