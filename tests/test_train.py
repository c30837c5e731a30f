"""Training: exact resume, checkpoints, atomic writes, faults, signals, the CLI end to end."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.cli import main
from charrnn_cli.io.config import from_dict
from charrnn_cli.training.loop import train

from conftest import make_config, write_yaml, params_of


def set_model(raw, mt):
    """mt "lstm+ln": the LSTM with model.layer_norm, and weight decay on; "gru+wdrop+emb": the GRU with
    model.weight_drop (its masks come from the dropout generator), an input embedding and random cuts:
    issue 32's options."""
    raw["model"]["type"] = mt.split("+")[0]
    if mt.endswith("+ln"):
        raw["model"]["layer_norm"] = True
        raw["training"]["weight_decay"] = 0.05
    if "+wdrop" in mt:
        raw["model"]["weight_drop"] = 0.3
        raw["training"]["random_cuts"] = True
    if "+emb" in mt:
        raw["model"]["embedding"] = 6


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "adagrad", "sgd"])
@pytest.mark.parametrize("mt", ["lstm", "gru", "lstm+ln", "gru+wdrop+emb"])
def test_exact_resume_is_bitwise(tmp_path, optimizer, mt):
    # 3000 chars, 90% train, 4 streams of 16: 43 steps an epoch, so 50 steps cross an epoch wrap
    raw = make_config(tmp_path, optimizer=optimizer, max_steps=50, eval_every=10, checkpoint_every=100)
    set_model(raw, mt)
    straight = train(from_dict(raw), quiet=True)
    assert straight.progress.epoch == 1
    a = params_of(os.path.join(straight.out_dir, "latest.npz"))

    raw2 = make_config(tmp_path, optimizer=optimizer, max_steps=23, eval_every=10, checkpoint_every=100)
    set_model(raw2, mt)
    raw2["output"]["dir"] = str(tmp_path / "run2")
    train(from_dict(raw2), quiet=True)
    raw2["training"]["max_steps"] = 50
    resumed = train(from_dict(raw2), resume=str(tmp_path / "run2" / "latest.npz"), quiet=True)
    assert resumed.progress.step == 50
    b = params_of(os.path.join(resumed.out_dir, "latest.npz"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_version_1_checkpoint_resumes_exactly(tmp_path):
    # version 1 stored the optimizer state of weight matrices transposed; load converts it
    raw = make_config(tmp_path, max_steps=6, checkpoint_every=100)
    train(from_dict(raw), quiet=True)
    with np.load(tmp_path / "run" / "latest.npz", allow_pickle=False) as z:
        arrays = dict(z)
    assert int(arrays["format_version"]) == 2
    old = {k: (np.ascontiguousarray(v.T) if k.startswith("optim.") and v.ndim == 2 else v) for k, v in arrays.items()}
    old["format_version"] = np.array(1)
    assert any(old[k].shape != arrays[k].shape for k in arrays)  # the test converts something
    np.savez(tmp_path / "v1.npz", **old)
    results = []
    for name, src in (("a", tmp_path / "run" / "latest.npz"), ("b", tmp_path / "v1.npz")):
        raw["output"]["dir"] = str(tmp_path / name)
        raw["training"]["max_steps"] = 10
        train(from_dict(raw), resume=str(src), quiet=True)
        results.append(params_of(str(tmp_path / name / "latest.npz")))
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)


def test_checkpoint_round_trip_and_contents(tmp_path):
    res = train(from_dict(make_config(tmp_path)), quiet=True)
    ck = ckpt.load(os.path.join(res.out_dir, "latest.npz"))
    with np.load(os.path.join(res.out_dir, "latest.npz"), allow_pickle=False) as z:
        names = set(z.files)
    for required in ["format_version", "config_json", "vocab", "rnn.weight_ih_l0", "rnn.weight_hh_l1",
                     "decoder.weight", "optim.t", "train.step", "train.epoch", "train.offset", "state.h",
                     "state.c", "rng_state", "history.train", "history.val"]:
        assert required in names, required
    assert ck.scalar("train.step") == 8 and ck.config.model.hidden_size == 12
    model = ck.build_model()
    from charrnn_cli.nn.model import CharRNN

    assert isinstance(model, CharRNN)
    sd = model.state_dict()
    for k, v in sd.items():
        np.testing.assert_array_equal(v, ck.arrays[k])
    assert ck.history("val").shape[1] == 4 and len(ck.history("val")) >= 2
    assert os.path.exists(os.path.join(res.out_dir, "best.npz"))
    lines = [json.loads(x) for x in open(os.path.join(res.out_dir, "metrics.jsonl"))]
    keys = {"step", "epoch", "chars_seen", "train_loss", "val_loss", "learning_rate", "chars_per_sec", "elapsed_s"}
    assert all(keys <= set(r) for r in lines)
    assert [r["step"] for r in lines if r["train_loss"] is not None] == [2, 4, 6, 8]


def test_training_reduces_the_loss(tmp_path):
    raw = make_config(tmp_path, max_steps=120, eval_every=40, learning_rate=0.02)
    raw["model"]["dropout"] = 0.0
    res = train(from_dict(raw), quiet=True)
    val = res.progress.history["val"]
    assert val[-1][3] < val[0][3] - 0.3
    assert val[-1][3] < np.log(12)  # better than uniform over the vocabulary


def test_resume_refuses_a_different_model(tmp_path):
    raw = make_config(tmp_path)
    train(from_dict(raw), quiet=True)
    raw["model"]["hidden_size"] = 16
    with pytest.raises(ckpt.CheckpointError, match="model.hidden_size is 12 in the checkpoint, 16 in the config"):
        train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True)


def test_resume_refuses_a_different_vocabulary(tmp_path):
    raw = make_config(tmp_path)
    train(from_dict(raw), quiet=True)
    other = tmp_path / "other.txt"
    other.write_text("xyz" * 1000)
    raw["data"]["path"] = str(other)
    with pytest.raises(ckpt.CheckpointError, match=r"the text has 3 characters the run never saw \(.x., .y., .z.\) and lacks"):
        train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True)


def test_atomic_write_survives_a_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    ckpt.atomic_save_npz(str(path), {"format_version": np.array(1), "x": np.arange(5)})
    real_savez = np.savez

    def crashing_savez(fh, **arrays):
        real_savez(fh, **arrays)
        fh.truncate(40)  # half-written file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_save_npz(str(path), {"format_version": np.array(1), "x": np.arange(99)})
    with np.load(path, allow_pickle=False) as z:
        assert z["x"].tolist() == list(range(5))
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temporary file left behind


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    from charrnn_cli.nn.model import CharRNN

    raw = make_config(tmp_path, max_steps=20, checkpoint_every=4)
    real_forward = CharRNN.forward
    calls = {"n": 0}

    def forward(self, idx, targets, state, masks=None, resets=None, **kw):
        loss, st, cache = real_forward(self, idx, targets, state, masks, resets, **kw)
        if masks is not None:  # training steps only
            calls["n"] += 1
            if calls["n"] == 7:
                loss = float("nan")
        return loss, st, cache

    monkeypatch.setattr(CharRNN, "forward", forward)
    cfg_path = write_yaml(tmp_path, raw)
    r = CliRunner().invoke(main, ["train", str(cfg_path), "--quiet"])
    assert r.exit_code == 1
    assert "loss became nan at step 7" in r.output and "Traceback" not in r.output
    ck = ckpt.load(str(tmp_path / "run" / "latest.npz"))
    assert ck.scalar("train.step") == 4
    assert all(np.isfinite(v).all() for k, v in ck.arrays.items() if k.startswith("rnn."))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_latest_and_exits_128_plus_signum(tmp_path, sig):
    raw = make_config(tmp_path, max_steps=1_000_000, checkpoint_every=1_000_000, eval_every=1_000_000,
                      log_every=1)
    cfg_path = write_yaml(tmp_path, raw)
    proc = subprocess.Popen([sys.executable, "-m", "charrnn_cli", "train", str(cfg_path), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.05)
    assert metrics.exists(), proc.communicate()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err  # 130 for SIGINT, 143 for SIGTERM
    assert f"interrupted by {signal.Signals(sig).name}: saved" in err and "Traceback" not in err
    ck = ckpt.load(str(tmp_path / "run" / "latest.npz"))
    assert ck.scalar("train.step") >= 1


def test_cli_train_end_to_end_then_sample_eval_info(tmp_path):
    raw = make_config(tmp_path)
    cfg_path = write_yaml(tmp_path, raw)
    runner = CliRunner()
    r = runner.invoke(main, ["train", str(cfg_path), "--quiet", "--set", "training.max_steps=6"])
    assert r.exit_code == 0, r.output
    assert "stopped at max_steps: step 6" in r.output and "bits/char" in r.output
    latest = str(tmp_path / "run" / "latest.npz")
    r = runner.invoke(main, ["sample", latest, "--seed", "the ", "--length", "30", "--rng-seed", "1"])
    assert r.exit_code == 0 and r.output.startswith("the ") and len(r.output) == 4 + 30 + 1
    r = runner.invoke(main, ["eval", latest, str(tmp_path / "text.txt"), "--json"])
    d = json.loads(r.output)
    assert d["chars"] == 2999 and d["bits_per_char"] == pytest.approx(d["nats_per_char"] / np.log(2))
    r = runner.invoke(main, ["info", latest])
    assert r.exit_code == 0 and "lstm, 2 layer(s) x 12 hidden" in r.output and "step 6" in r.output


@pytest.mark.parametrize("args,message", [
    (["--set", "training.batch_size=0"], "training.batch_size: must be > 0"),
    (["--set", "model.hiden_size=3"], "did you mean 'hidden_size'"),
    (["--set", "data.path=nope.txt"], "nope.txt"),
    (["--set", "training.batch_size=500"], "needs at least"),
    (["--resume", "missing.npz"], "checkpoint not found: missing.npz"),
])
def test_cli_train_user_errors_are_one_line(tmp_path, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg_path = write_yaml(tmp_path, make_config(tmp_path))
    r = CliRunner().invoke(main, ["train", str(cfg_path), "--quiet"] + args)
    assert r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output
    assert r.output.strip().count("\n") == 0


def test_cli_train_bad_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    (tmp_path / "bad.yaml").write_text("training: {batch_size: [")
    r = runner.invoke(main, ["train", "bad.yaml"])
    assert r.exit_code == 1 and "invalid YAML in bad.yaml" in r.output
    r = runner.invoke(main, ["train", "none.yaml"])
    assert r.exit_code == 1 and "config file not found" in r.output
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "d").mkdir()
    for path, msg in [("empty.txt", "data file is empty"), ("d", "directory")]:
        cfg = write_yaml(tmp_path, {"data": {"path": path}, "output": {"dir": "run"}, "training": {"max_steps": 1}})
        r = runner.invoke(main, ["train", str(cfg)])
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output


def test_cli_tiny_config_runs(monkeypatch, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(root)
    r = CliRunner().invoke(main, ["train", "configs/tiny.yaml", "--quiet", "--set", "training.max_steps=5",
                                  "--set", f"output.dir={tmp_path / 'tiny'}"])
    assert r.exit_code == 0, r.output


def test_state_is_carried_between_steps_and_reset_at_the_epoch_wrap(tmp_path, monkeypatch):
    from charrnn_cli.nn.model import CharRNN

    raw = make_config(tmp_path, max_steps=50, eval_every=1000, checkpoint_every=1000)
    raw["model"]["dropout"] = 0.0
    seen = []  # (input state, output state, inputs) of every training step
    real_forward = CharRNN.forward

    def forward(self, idx, targets, state, masks=None, resets=None, **kw):
        loss, new_state, cache = real_forward(self, idx, targets, state, masks, resets, **kw)
        seen.append(([s.copy() for s in state], [s.copy() for s in new_state], idx.copy()))
        return loss, new_state, cache

    monkeypatch.setattr(CharRNN, "forward", forward)
    res = train(from_dict(raw), quiet=True)
    seen = seen[:50]  # the training steps; validation runs once, after them
    steps_per_epoch = 43  # 2,700 training characters: 4 streams of 674, chunks of 16 -> 43 steps
    assert res.progress.step == 50 and res.progress.epoch == 1
    for j, (s_in, _, _) in enumerate(seen):
        if j in (0, steps_per_epoch):  # a fresh start and the wrap: zero state
            assert all(not s.any() for s in s_in), j
        else:  # otherwise exactly the state the previous step ended with
            for a, b in zip(s_in, seen[j - 1][1]):
                np.testing.assert_array_equal(a, b)
    # the wrap restarts every stream at its beginning
    np.testing.assert_array_equal(seen[steps_per_epoch][2], seen[0][2])


def test_cli_train_unwritable_output_is_one_line(tmp_path):
    raw = make_config(tmp_path)
    (tmp_path / "afile").write_text("x")
    raw["output"]["dir"] = str(tmp_path / "afile" / "run")  # a folder inside a regular file
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    r = CliRunner().invoke(main, ["train", str(write_yaml(tmp_path, raw)), "--quiet"])
    assert r.exit_code == 1 and "is not writable" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "cache").exists()  # found out before any work


def test_resume_with_another_seq_length_continues_from_the_same_characters(tmp_path):
    raw = make_config(tmp_path, max_steps=5, checkpoint_every=100)
    train(from_dict(raw), quiet=True)
    ck = ckpt.load(str(tmp_path / "run" / "latest.npz"))
    assert ck.scalar("train.offset") == 5 * 16
    raw["training"].update(seq_length=8, max_steps=9)
    res = train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True)
    assert res.progress.offset == 5 * 16 + 4 * 8 and res.progress.chars_seen == 4 * (5 * 16 + 4 * 8)


def test_resume_with_another_optimizer_starts_its_state_fresh(tmp_path):
    raw = make_config(tmp_path, max_steps=2)
    train(from_dict(raw), quiet=True)
    raw["training"].update(optimizer="rmsprop", max_steps=4)
    said = []
    res = train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True, echo=said.append)
    assert any("was trained with adam; rmsprop starts with fresh state" in s for s in said)
    ck = ckpt.load(str(tmp_path / "run" / "latest.npz"))
    assert str(ck.arrays["optim.name"]) == "rmsprop" and int(ck.arrays["optim.t"]) == 2  # fresh: 2 updates
    assert res.progress.step == 4
