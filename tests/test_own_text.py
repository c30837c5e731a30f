"""Training on your own text: the first hour of a new user. A text file without a config, stop
conditions, paths, time budgets across resumes, validation's share of the run, divergence,
early stopping, threads, scoring a run's own validation split, top-p sampling."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.io.config import from_dict, load_config
from charrnn_cli.training.loop import train
from charrnn_cli.training.trainer import Trainer
from charrnn_cli.training.validation import ValidationPlan

from conftest import invoke, make_config, make_text, metrics_of, one_line, params_of, write_yaml


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--set", "model.hidden_size=12", "--set", "model.num_layers=1", "--set", "training.batch_size=4",
         "--set", "training.seq_length=16", "--set", "training.eval_every=4"]


# ---- getting started on a file --------------------------------------------------------------


def test_train_a_text_file_without_a_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_text(tmp_path / "mytext.txt")
    r = invoke("train", "mytext.txt", *SMALL, "--set", "training.max_steps=5")
    assert r.exit_code == 0, r.output
    assert "config: " + os.path.join("runs", "mytext", "config.yaml") in r.output
    assert "stopped at max_steps: step 5" in r.output
    cfg = load_config(tmp_path / "runs" / "mytext" / "config.yaml")  # the saved config is a valid config ...
    assert cfg.data.path == "mytext.txt" and cfg.model.hidden_size == 12 and cfg.output.dir == "runs/mytext"
    assert cfg.training.learning_rate == from_dict({}).training.learning_rate  # the default model's
    ck = ckpt.load(str(tmp_path / "runs" / "mytext" / "latest.npz"))
    assert ck.config.to_dict() == cfg.to_dict()  # ... and the one the run used
    # the next step the line suggests: copy, edit, train
    r = invoke("train", tmp_path / "runs" / "mytext" / "config.yaml", "--quiet", "--set", "output.dir=copy")
    assert r.exit_code == 0 and "stopped at max_steps: step 5" in r.output, r.output


def test_a_text_too_short_for_a_batch_says_what_fits_and_that_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "verse.txt").write_text("the cat sat on the mat\n" * 40)  # 920 characters, 828 to train on
    small = ["--set", "model.hidden_size=12", "--set", "model.num_layers=1", "--set", "training.max_steps=3",
             "--quiet"]
    r = invoke("train", "verse.txt", *small)  # the default batch, 32 x 65, needs 2,080
    assert r.exit_code == 1 and one_line(r), r.output
    assert "the training split has 828 characters" in r.output
    hint = r.output.strip().rsplit("; ", 1)[1]
    assert hint == "--set training.batch_size=12 fits"  # 828 // 65, worked by hand
    r = invoke("train", "verse.txt", *small, *hint.split()[:2])
    assert r.exit_code == 0 and "stopped at max_steps: step 3" in r.output, r.output
    # shorter than one sequence: batch 1 and a shorter sequence
    (tmp_path / "line.txt").write_text("x" * 50)  # 45 to train on
    r = invoke("train", "line.txt", *small, "--set", "output.dir=runs/line")
    assert r.exit_code == 1 and one_line(r), r.output
    hint = r.output.strip().rsplit("; ", 1)[1]
    assert hint == "--set training.batch_size=1 --set training.seq_length=44 fits"
    r = invoke("train", "line.txt", *small, "--set", "output.dir=runs/line", *hint.split()[:4])
    assert r.exit_code == 0 and "stopped at max_steps: step 3" in r.output, r.output


def test_minutes_limits_the_invocation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_text(tmp_path / "mytext.txt")
    t = time.monotonic()
    r = invoke("train", "mytext.txt", *SMALL, "--minutes", "0.02", "--quiet")
    assert r.exit_code == 0 and "stopped at max_minutes" in r.output, r.output
    assert time.monotonic() - t < 10


def test_resume_goes_on_with_the_runs_own_config(tmp_path, monkeypatch):
    """A run started with --set goes on with `--resume` alone, as it was configured, bit for bit,
    from another folder too; the same text at another relative path is no change of data."""
    monkeypatch.chdir(tmp_path)
    make_text(tmp_path / "mytext.txt")
    steps = lambda n: ("--set", f"training.max_steps={n}")  # noqa: E731
    fixed = ("--set", "training.lr_schedule=step")  # the default cosine's horizon moves with max_steps
    assert invoke("train", "mytext.txt", *SMALL, *fixed, *steps(8), "--set", "output.dir=straight").exit_code == 0
    assert invoke("train", "mytext.txt", *SMALL, *fixed, *steps(4), "--quiet").exit_code == 0
    r = invoke("train", "mytext.txt", "--quiet")  # forgot --resume: refused, and told the command
    assert r.exit_code == 1 and "continue it with charrnn train --resume runs/mytext/latest.npz" in r.output
    r = invoke("train", "--resume", "runs/mytext/latest.npz", *steps(8))  # no config, no --set repeated
    assert r.exit_code == 0 and "stopped at max_steps: step 8" in r.output, r.output
    assert ckpt.load("runs/mytext/latest.npz").config.model.hidden_size == 12
    resumed, straight = params_of("runs/mytext/latest.npz"), params_of("straight/latest.npz")
    assert len(resumed) > 10 and resumed.keys() == straight.keys()  # weights, optimizer state, carried state
    assert all(np.array_equal(resumed[k], straight[k]) for k in resumed)
    r = invoke("train", "--resume", "runs/mytext", *steps(9), "--quiet")  # a run folder: its latest.npz
    assert r.exit_code == 0 and "step 9" in r.output, r.output
    os.mkdir("elsewhere")
    monkeypatch.chdir(tmp_path / "elsewhere")  # the text is found above the checkpoint's folder
    r = invoke("train", "--resume", "../runs/mytext/latest.npz", *steps(10))
    assert r.exit_code == 0 and "stopped at max_steps: step 10" in r.output, r.output
    assert "changed" not in r.output and "note:" not in r.output  # the run's own text, folder and config
    raw = yaml.safe_load((tmp_path / "runs" / "mytext" / "config.yaml").read_text())
    raw["output"]["dir"] = "other"
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(raw))  # a config file naming another folder
    r = invoke("train", "../other.yaml", "--resume", "../runs/mytext/latest.npz", *steps(11))
    assert r.exit_code == 0 and ("note: continuing in ../runs/mytext, the checkpoint's folder (the config says "
                                 "other; --set output.dir=... to write elsewhere)") in r.output, r.output
    r = invoke("train", "../mytext.txt", "--resume", "../runs/mytext/latest.npz", *steps(12), "--quiet")
    assert r.exit_code == 0 and "step 12" in r.output, r.output  # a TEXT_FILE: the run's config, on it
    os.rename("../mytext.txt", "../moved.txt")
    r = invoke("train", "--resume", "../runs/mytext/latest.npz", *steps(14))
    assert r.exit_code == 1 and one_line(r) and "charrnn train TEXT_FILE --resume" in r.output, r.output
    for args in (("train",), ("train", "--resume", "../moved.txt"), ("train", "--resume", "nothere.npz")):
        r = invoke(*args)
        assert r.exit_code == 1 and one_line(r) and r.output.startswith("Error: "), r.output
    r = invoke("train", "../runs/mytext/latest.npz")  # a checkpoint given as the text
    assert r.exit_code == 1 and one_line(r) and r.output == (
        "Error: ../runs/mytext/latest.npz is a checkpoint, not text: to go on with its run, "
        "charrnn train --resume ../runs/mytext/latest.npz\n")


def test_the_defaults_are_the_default_main_job():
    """One default: what a config leaves out is the default main job's value (configs/shakespeare.yaml
    states each of them), so a config naming only its text trains the model `charrnn train FILE` does."""
    with open(os.path.join(ROOT, "configs", "shakespeare.yaml")) as fh:
        bundled = yaml.safe_load(fh)
    defaults = from_dict({}).to_dict()
    for section, values in bundled.items():
        for key, value in values.items():
            if (section, key) not in (("data", "path"), ("output", "dir")):
                assert defaults[section][key] == value, (section, key)
    assert from_dict(bundled).to_dict() == dict(defaults, output={"dir": "runs/shakespeare"})


def test_a_config_naming_only_its_text_trains_the_default_model_into_runs_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_text(tmp_path / "code.txt")
    (tmp_path / "c.yaml").write_text("data:\n  path: code.txt\ntraining:\n  max_steps: 2\n")
    from_file = load_config(tmp_path / "c.yaml")
    from charrnn_cli.io.targets import own_text_config

    own = own_text_config("code.txt", ["training.max_steps=2"])
    assert from_file.to_dict() == own.to_dict()
    assert from_file.output.dir == os.path.join("runs", "code") and from_file.model.num_layers == 2
    assert from_file.model.hidden_size == 384 and from_file.training.lr_schedule == "cosine"


def test_a_config_without_a_stop_condition_is_refused(tmp_path):
    raw = make_config(tmp_path)
    del raw["training"]["max_steps"]
    raw["training"]["max_minutes"] = None  # the default has one (10 minutes): a config must take it away
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert r.exit_code == 1 and one_line(r) and "sets no stop condition" in r.output, r.output
    assert not (tmp_path / "run").exists()
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet", "--minutes", "0.01")
    assert r.exit_code == 0, r.output


def test_a_duplicate_key_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("training:\n  max_steps: 5\n  max_steps: 6\n")
    r = invoke("train", p)
    assert r.exit_code == 1 and one_line(r) and "duplicate key 'max_steps': lines 2 and 3" in r.output


def test_relative_data_paths_are_found_from_the_config_folder_upwards(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "data").mkdir()
    make_text(project / "data" / "t.txt")
    raw = make_config(tmp_path)
    raw["data"]["path"] = "data/t.txt"
    raw["output"]["dir"] = str(tmp_path / "run")
    cfg = write_yaml(project / "configs", raw)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = invoke("train", os.path.relpath(cfg), "--quiet")
    assert r.exit_code == 0, r.output
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).config.data.path == str(project / "data" / "t.txt")
    r = invoke("train", os.path.relpath(cfg), "--quiet", "--overwrite", "--set", "data.path=data/none.txt")
    assert r.exit_code == 1 and one_line(r), r.output
    assert str(elsewhere / "data" / "none.txt") in r.output and str(project / "configs") in r.output
    assert "relative paths are tried from the current folder, then from the config file's folder" in r.output


# ---- time and budgets -----------------------------------------------------------------------


def test_validation_is_sized_from_the_config_and_the_data_alone():
    t_cfg = from_dict({"training": {"eval_every": 10, "eval_share": 0.1, "eval_max_chars": 10_000_000,
                                    "batch_size": 64, "seq_length": 100}}).training
    # between validations 10 x 64 x 100 = 64,000 characters train; forward-only validation costs
    # about 1/2.5 as much a character, so 10% of the time is 0.1 / 0.9 x 2.5 x 64,000 = 17,777
    assert ValidationPlan(t_cfg, 5_000_001).chars == 17_777
    assert ValidationPlan(t_cfg, 5_001).chars == 5_000  # a small split: all of it
    t_cfg.eval_share = None
    assert ValidationPlan(t_cfg, 5_000_001).chars == 5_000_000  # no limit: everything (up to eval_max_chars)
    t_cfg.eval_max_chars = 1000
    assert ValidationPlan(t_cfg, 5_000_001).chars == 1000


def test_one_config_reports_the_same_validation_losses_on_a_busy_machine(tmp_path, monkeypatch):
    """The characters validation scores follow from the config and the data, never from a clock: a
    run beside CPU-bound processes, with a clock that makes every timed stretch look slow, reports
    what the same run alone does."""
    import subprocess
    import sys

    text = make_text(tmp_path / "big.txt", n=150_000)
    raw = {"data": {"path": str(text)}, "model": {"hidden_size": 48, "num_layers": 2},
           "training": {"max_steps": 30, "eval_every": 10, "unit_split": 1, "max_minutes": None,
                        "batch_size": 32, "seq_length": 64, "eval_share": 0.1}}

    def losses(folder):
        raw["output"] = {"dir": str(tmp_path / folder)}
        res = train(from_dict(raw), quiet=True, echo=lambda m: None)
        return [r[3] for r in res.progress.history["val"]], res.progress.eval_chars

    alone, chars = losses("alone")
    assert chars < 15_000 - 1  # eval_share cut the split (15,000 characters): the case a clock once decided
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    ticks, real = iter(range(10 ** 9)), time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + 0.05 * next(ticks))  # every reading 50 ms later
    try:
        busy, busy_chars = losses("busy")
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert busy == alone and busy_chars == chars


def test_validation_time_counts_in_max_minutes(tmp_path, monkeypatch):
    raw = make_config(tmp_path, max_steps=None, max_minutes=0.05, eval_every=1_000_000, eval_max_chars=None,
                      eval_share=0.1)
    real = Trainer.validation_loss

    def slow(self, max_chars=None):  # validation at 2 ms per character: scoring all 300 would take 0.6 s
        time.sleep(2e-3 * (max_chars or 300))
        return real(self, max_chars)

    monkeypatch.setattr(Trainer, "validation_loss", slow)
    res = train(from_dict(raw), quiet=True)
    assert res.stop_reason == "max_minutes"
    assert res.progress.elapsed_s <= 3.0 + 0.5, res.progress.elapsed_s  # the final validation fits the budget
    last = metrics_of(tmp_path / "run")[-1]
    assert last["val_s"] > 0 and last["val_total_s"] >= last["val_s"]


def test_a_spent_budget_says_how_to_extend_it_and_the_cosine_goes_on_smoothly(tmp_path):
    raw = make_config(tmp_path, max_steps=10, lr_schedule="cosine", lr_min_fraction=0.1, log_every=1,
                      eval_every=1000, learning_rate=0.01)
    cfg = write_yaml(tmp_path, raw)
    assert invoke("train", cfg, "--quiet").exit_code == 0
    latest = tmp_path / "run" / "latest.npz"
    r = invoke("train", cfg, "--quiet", "--resume", latest)
    assert r.exit_code == 1 and one_line(r), r.output
    assert ("has already reached training.max_steps 10; the budget counts the whole run, across resumes: "
            "raise it with --set training.max_steps=N (N > 10)") in r.output
    r = invoke("train", "--quiet", "--resume", latest, "--set", "training.max_steps=null",
               "--set", "training.max_minutes=0.00001")  # less than the 10 steps took
    assert r.exit_code == 1 and "has already reached training.max_minutes" in r.output, r.output
    assert "train on with --minutes N (N more minutes)" in r.output, r.output
    r = invoke("train", cfg, "--quiet", "--resume", latest, "--set", "training.max_steps=20")
    assert r.exit_code == 0, r.output
    lrs = {m["step"]: m["learning_rate"] for m in metrics_of(tmp_path / "run") if m["learning_rate"]}
    assert lrs[10] == pytest.approx(0.001) and lrs[11] == pytest.approx(0.001)  # no jump back up to 0.0059


def test_extending_a_cosine_midway_continues_from_where_it_was(tmp_path):
    raw = make_config(tmp_path, max_steps=5, lr_schedule="cosine", lr_decay_steps=10, lr_min_fraction=0.0,
                      log_every=1, eval_every=1000, learning_rate=1.0)
    train(from_dict(raw), quiet=True)
    raw["training"].update(max_steps=7, lr_decay_steps=30)
    train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True)
    lrs = [m["learning_rate"] for m in metrics_of(tmp_path / "run") if m["learning_rate"]]
    assert lrs[4] == pytest.approx(0.5)  # step 5 of 10: halfway down
    assert 0.45 < lrs[5] < lrs[4]  # goes on down from there (the plain 30-step clock would give 0.93)


def test_an_unchanged_cosine_resumes_bit_for_bit(tmp_path):

    raw = make_config(tmp_path, max_steps=12, lr_schedule="cosine", lr_decay_steps=12, checkpoint_every=100)
    raw["output"]["dir"] = str(tmp_path / "straight")
    train(from_dict(raw), quiet=True)
    raw["output"]["dir"] = str(tmp_path / "split")
    raw["training"]["max_steps"] = 5
    train(from_dict(raw), quiet=True)
    raw["training"]["max_steps"] = 12
    train(from_dict(raw), resume=str(tmp_path / "split" / "latest.npz"), quiet=True)
    a, b = params_of(str(tmp_path / "straight" / "latest.npz")), params_of(str(tmp_path / "split" / "latest.npz"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_diverged_run_says_so_and_info_too(tmp_path):
    raw = make_config(tmp_path, max_steps=30, eval_every=10, learning_rate=1000.0)
    raw["model"]["dropout"] = 0.0
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert r.exit_code == 0, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("warning: the run diverged") and "far above a uniform guess" in last
    assert "learning_rate (now 1000)" in last
    r = invoke("info", tmp_path / "run" / "latest.npz")
    assert "the run diverged" in r.output
    assert json.loads(invoke("info", tmp_path / "run" / "latest.npz", "--json").output)["diverged"] is True


def test_a_healthy_run_has_no_divergence_warning(tmp_path):
    r = invoke("train", write_yaml(tmp_path, make_config(tmp_path)), "--quiet")
    assert r.exit_code == 0 and "diverged" not in r.output


def test_patience_stops_when_validation_stops_improving(tmp_path, monkeypatch):
    raw = make_config(tmp_path, max_steps=100, eval_every=2, patience=2)
    losses = iter([3.0, 2.0, 2.5, 2.1, 1.0, 1.0])

    monkeypatch.setattr(Trainer, "validation_loss", lambda self, max_chars=None: next(losses))
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert r.exit_code == 0, r.output
    assert "stopped early (validation has not improved for 2 evaluations, training.patience): step 8" in r.output
    assert "best model" in r.output and "(step 4, validation 2.0000)" in r.output


def test_threads_apply_before_numpy_starts(tmp_path):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two cores to tell one BLAS thread from several")
    cfg = write_yaml(tmp_path, make_config(tmp_path, max_steps=2))
    code = ("import os, sys; from charrnn_cli.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('THREADS', len(os.listdir('/proc/self/task')), os.environ.get('OPENBLAS_NUM_THREADS'))")
    counts = {}
    for n in (1, 2):
        env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
        out = subprocess.run([sys.executable, "-c", code, "train", str(cfg), "--quiet", "--overwrite",
                              "--threads", str(n)], capture_output=True, text=True, env=env, timeout=120).stdout
        line = [x for x in out.splitlines() if x.startswith("THREADS")][0].split()
        assert line[2] == str(n)
        counts[n] = int(line[1])
    assert counts[1] < counts[2]  # one BLAS thread fewer


# ---- what the user watches ------------------------------------------------------------------


def test_a_log_file_gets_plain_progress_lines_not_a_redrawn_bar(tmp_path):
    """Not a terminal (a cluster job's output file, a pipe): a line at the first report and at each
    validation, none in between (within PLAIN_EVERY_S), and no carriage-return redraws."""
    cfg = write_yaml(tmp_path, make_config(tmp_path, max_steps=8, log_every=2, eval_every=4))
    r = invoke("train", cfg)
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if x.startswith("step ")]
    assert [x.split(":")[0] for x in lines] == ["step 2 of 8", "step 4 of 8", "step 8 of 8"], r.output
    assert lines[1].startswith("step 4 of 8: ep ") and " val 2." in lines[1] and "ch/s" in lines[1]
    assert "\r" not in r.output


def test_plain_lines_come_at_most_every_30_seconds_validations_aside(monkeypatch):
    import io

    from charrnn_cli.training import bar as progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    said = []
    view = progress.ProgressBar(None, 0, False, said.append, stream=io.StringIO())
    for t, step, evaluated in ((100, 20, False), (110, 40, False), (131, 60, False), (132, 80, True), (150, 100, False)):
        clock[0] = t
        view.report(step, f"loss at {step}", evaluated)
    view.close()
    assert said == ["step 20: loss at 20", "step 60: loss at 60", "step 80: loss at 80"]


def test_a_terminal_gets_the_progress_bar(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    cfg = write_yaml(tmp_path, make_config(tmp_path, max_steps=8, log_every=2, eval_every=4))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 24 x 120, as a terminal has
    proc = subprocess.Popen([sys.executable, "-m", "charrnn_cli", "train", str(cfg)], stdout=slave, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the other end closed: the process is done
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = out.decode("utf-8", "replace")
    assert "step/s" in text and "\r" in text and "stopped at max_steps: step 8" in text, text
    assert "step 2 of 8:" not in text


# ---- looking at results ---------------------------------------------------------------------


def test_eval_without_a_file_scores_the_runs_validation_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = make_config(tmp_path, max_steps=6)
    invoke("train", write_yaml(tmp_path, raw), "--quiet")
    text = (tmp_path / "text.txt").read_text(encoding="utf-8")
    cut = tmp_path / "val.txt"
    cut.write_text(text[len(text) - int(len(text) * 0.1):], encoding="utf-8")  # the split, cut by hand
    best = tmp_path / "run" / "best.npz"
    own = json.loads(invoke("eval", best, "--json").output)
    by_hand = json.loads(invoke("eval", best, cut, "--json").output)
    assert own["split"] == "validation" and own["chars"] == by_hand["chars"] == 299
    assert own["nats_per_char"] == pytest.approx(by_hand["nats_per_char"], rel=1e-6)
    os.rename(tmp_path / "text.txt", tmp_path / "moved.txt")
    r = invoke("eval", best)
    assert r.exit_code == 1 and one_line(r) and "is not found" in r.output and "pass a FILE" in r.output


def _probs_chosen(logits, n=40000, **kw):
    from charrnn_cli.tools.sample import _choose, _gumbel

    rng = np.random.default_rng(0)
    z = np.repeat(np.asarray(logits, dtype=np.float64)[None], n, axis=0)
    picks = _choose(z, kw.get("temperature", 1.0), kw.get("top_k"), False, _gumbel(rng, z.shape), kw.get("top_p"))
    return np.bincount(picks, minlength=z.shape[1]) / n


def test_top_p_against_a_hand_computed_case():
    logits = np.log([0.5, 0.3, 0.15, 0.05])
    # p = 0.7: the nucleus is {0.5, 0.3} (0.5 < 0.7 <= 0.8), renormalised to 0.625, 0.375
    np.testing.assert_allclose(_probs_chosen(logits, top_p=0.7), [0.625, 0.375, 0, 0], atol=0.01)
    # p = 0.9: {0.5, 0.3, 0.15}, renormalised by 0.95
    np.testing.assert_allclose(_probs_chosen(logits, top_p=0.9), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0], atol=0.01)
    # p = 0.5 exactly: the top entry alone reaches it
    np.testing.assert_allclose(_probs_chosen(logits, top_p=0.5), [1, 0, 0, 0])
    # ties with the last kept entry stay in
    np.testing.assert_allclose(_probs_chosen(np.log([0.4, 0.3, 0.3]), top_p=0.6), [0.4, 0.3, 0.3], atol=0.01)
    # after temperature 0.5: p^2 renormalised = [.685, .247, .062, .007]; p = 0.9 keeps two (.685 + .247 = .932)
    sq = np.array([0.25, 0.09, 0.0225, 0.0025]) / 0.365
    kept = sq[:2] / sq[:2].sum()
    np.testing.assert_allclose(_probs_chosen(logits, top_p=0.9, temperature=0.5), list(kept) + [0, 0], atol=0.01)


def test_top_p_on_the_command_line(tmp_path):
    raw = make_config(tmp_path, max_steps=4)
    train(from_dict(raw), quiet=True)
    latest = tmp_path / "run" / "latest.npz"
    argmax = invoke("sample", latest, "--seed", "the", "--length", 30, "--argmax").output
    r = invoke("sample", latest, "--seed", "the", "--length", 30, "--top-p", "1e-9", "--rng-seed", 2)
    assert r.exit_code == 0 and r.output == argmax
    r = invoke("sample", latest, "--seed", "the", "--length", 30, "--top-p", "0.9", "--num-samples", 2)
    assert r.exit_code == 0 and r.output.count("--- sample") == 2
    for bad in ("0", "1.5"):
        r = invoke("sample", latest, "--top-p", bad)
        assert r.exit_code == 2 and "--top-p" in r.output


def test_the_rng_seed_is_documented_as_fixing_the_noise():
    r = invoke("sample", "--help")
    assert "fixes the noise, not the text" in " ".join(r.output.split())
