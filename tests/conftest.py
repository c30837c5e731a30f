"""The tests' shared helpers, in one place: small texts and configs, running the command line,
reading a run's metrics, waiting for a process. Test files import them with `from conftest import ...`."""

import os
import time

import numpy as np
import yaml
from click.testing import CliRunner

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.cli import main
from charrnn_cli.training.runfolder import read_metrics


def make_text(path, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "é", "ß"]
    out, size = [], 0
    while size < n:
        w = words[rng.integers(len(words))] + (" " if rng.random() < 0.85 else "\n")
        out.append(w)
        size += len(w)
    path.write_text("".join(out)[:n], encoding="utf-8")
    return path


def make_config(tmp_path, **training):
    text = make_text(tmp_path / "text.txt")
    raw = {
        "data": {"path": str(text), "val_fraction": 0.1, "min_count": 1},
        "model": {"type": "lstm", "hidden_size": 12, "num_layers": 2, "dropout": 0.2},
        "training": dict({"batch_size": 4, "seq_length": 16, "learning_rate": 0.01, "lr_schedule": "step", "warmup_steps": 0,
                          "max_steps": 8, "eval_every": 4, "eval_share": None, "checkpoint_every": 4, "log_every": 2,
                          "seed": 3},
                         **training),
        "output": {"dir": str(tmp_path / "run")},
    }
    return raw


def write_yaml(tmp_path, raw, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def params_of(path):
    ck = ckpt.load(path)
    return {k: v for k, v in ck.arrays.items() if k.startswith(("rnn.", "decoder.", "optim.", "state."))}


NAMES = ["anna", "bob", "cleo", "dan", "eve", "fay", "gus", "hal", "ida", "jo", "kay", "lee", "max", "ned",
         "ole", "pam", "quin", "rex", "sue", "tom", "uma", "val", "wes", "xia", "yul", "zed"]


def names_config(tmp_path, **training):
    f = tmp_path / "names.txt"
    f.write_text("\n".join(NAMES * 4) + "\n")
    return {"data": {"path": str(f), "val_fraction": 0.2, "mode": "lines", "min_count": 1},
            "model": {"type": "lstm", "hidden_size": 16, "num_layers": 1, "dropout": 0.0},
            "training": dict({"batch_size": 4, "seq_length": 8, "learning_rate": 0.02, "lr_schedule": "step", "warmup_steps": 0,
                              "max_steps": 40,
                              "eval_every": 20, "checkpoint_every": 20, "seed": 1}, **training),
            "output": {"dir": str(tmp_path / "run")}}


def invoke(*args, **kw):
    """The command line in this process (CliRunner), every argument as a string."""
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def one_line(r):
    """The output is one line at most, with no traceback."""
    return "Traceback" not in r.output and r.output.strip().count("\n") == 0


def refused(r):
    """A refusal as one clear line: a non-zero exit, no traceback, no exception escaping the command."""
    return (r.exit_code not in (0, None) and (r.exception is None or isinstance(r.exception, SystemExit))
            and "Traceback" not in r.output and r.output.strip() != "" and r.output.strip().count("\n") == 0)


def metrics_of(run_dir):
    return read_metrics(os.path.join(run_dir, "metrics.jsonl"))


def steps_logged(run_dir):
    return [r["step"] for r in metrics_of(run_dir) if r["train_loss"] is not None]


def wait_for_lines(path, n, proc, timeout=60):
    """Wait until the file at path has n lines, while the process proc runs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} lines")
