"""The unit-split team (team.py): the same gradients as one process, for real forked processes,
and a run that ends well whichever process fails or is stopped."""

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
from charrnn_cli.io.config import ConfigError, TrainingConfig, from_dict
from charrnn_cli.parallel import cores
from charrnn_cli.parallel.cores import auto_team, blas_pin_note, cpu_vector_level, plan_threads, team_size
from charrnn_cli.nn.model import CharRNN
from charrnn_cli.nn.optim import clip_and_step, global_norm, make_optimizer
from charrnn_cli.parallel.solo import SOLO
from charrnn_cli.parallel.team import make_team

from conftest import make_config, write_yaml, params_of


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (state, parent pid, ...), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children(pid):
    """The pids of pid's live child processes, from /proc."""
    kids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        fields = proc_stat(entry)
        if fields and int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(entry))
    return kids


def one_step(model, team, x, y, state, masks, resets, repeats=1, wmasks=None):
    for _ in range(repeats):
        team.begin(x, state, masks, resets, targets=y, wmasks=wmasks)
        loss, new_state, cache = model.forward(x, y, state, masks, resets, team=team, wmasks=wmasks)
        grads, _ = model.backward(cache, team=team)
    return loss, new_state, grads


@pytest.mark.parametrize("mt", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers,hidden,size,dropout,resets", [
    (1, 8, 2, 0.0, False),  # the plain path
    (2, 6, 2, 0.3, True),  # dropout between layers and of W_hh, lines-mode resets, an input product per layer
    (2, 9, 3, 0.0, False),  # three processes, three units each, an input embedding (its gradient: process 0's)
])
def test_a_team_computes_one_process_gradients(mt, layers, hidden, size, dropout, resets):
    """float64: the loss, the final state and every gradient as one process computes them."""
    V, T, B = 11, 7, 5
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    emb = 5 if size == 3 else 0
    solo = CharRNN(mt, V, hidden, layers, dropout=dropout, seed=3, dtype=np.float64, weight_drop=dropout, embedding=emb)
    split = CharRNN(mt, V, hidden, layers, dropout=dropout, seed=3, dtype=np.float64, weight_drop=dropout, embedding=emb)
    state = tuple(rng.standard_normal(s.shape) for s in solo.zero_state(B))  # a carried state, not zeros
    masks = solo.dropout_masks(T, B, np.random.default_rng(1)) if dropout else None
    wmasks = solo.weight_masks(np.random.default_rng(2))
    res = rng.random((T, B)) < 0.2 if resets else None
    want = one_step(solo, SOLO, x, y, state, masks, res, wmasks=wmasks)
    team = make_team(size, split, B, T)
    try:
        assert len(children(os.getpid())) >= size - 1
        got = one_step(split, team, x, y, state, masks, res, repeats=2, wmasks=wmasks)  # a second step reuses the buffers
    finally:
        team.close()
    assert not set(children(os.getpid())) & set(team.pids)
    assert got[0] == pytest.approx(want[0], abs=1e-12)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert set(got[2]) == set(want[2])
    for k in want[2]:
        np.testing.assert_allclose(got[2][k], want[2][k], atol=1e-12, err_msg=k)


def test_a_shorter_chunk_then_a_full_one():
    """The last chunk of an epoch can be shorter: the shared buffers grow again for the next."""
    V, H, B = 9, 8, 3
    solo, split = CharRNN("lstm", V, H, 1, seed=1, dtype=np.float64), CharRNN("lstm", V, H, 1, seed=1, dtype=np.float64)
    team = make_team(2, split, B, 10)
    try:
        for T in (4, 10):
            x = np.random.default_rng(T).integers(0, V, (T + 1, B))
            want = one_step(solo, SOLO, x[:-1], x[1:], solo.zero_state(B), None, None)
            got = one_step(split, team, x[:-1], x[1:], split.zero_state(B), None, None)
            for k in want[2]:
                np.testing.assert_allclose(got[2][k], want[2][k], atol=1e-12, err_msg=k)
    finally:
        team.close()


@pytest.mark.parametrize("size", [2, 3])
def test_a_chunk_of_one_character(size):
    """One position: the processes past the first have no rows of the logits, softmax or loss; after
    a longer chunk, in which they had rows, the loss holds nothing of theirs from that chunk."""
    V, H = 7, 6
    solo, split = CharRNN("gru", V, H, 1, seed=1, dtype=np.float64), CharRNN("gru", V, H, 1, seed=1, dtype=np.float64)
    team = make_team(size, split, 1, 4)
    try:
        for x in (np.array([[1], [4], [0], [6], [2]]), np.array([[3], [5]])):
            want = one_step(solo, SOLO, x[:-1], x[1:], solo.zero_state(1), None, None)
            got = one_step(split, team, x[:-1], x[1:], split.zero_state(1), None, None)
            assert got[0] == pytest.approx(want[0], abs=1e-12)
            for k in want[2]:
                np.testing.assert_allclose(got[2][k], want[2][k], atol=1e-12, err_msg=k)
    finally:
        team.close()


@pytest.mark.parametrize("name,clip_mode,clip,wd", [
    ("adam", "norm", 0.05, 0.0),  # the norm clip scales every block by the same factor
    ("adam", "value", 0.002, 0.0),
    ("adam", "norm", 5.0, 0.1),  # weight decay: each process shrinks its block of the weights
    ("rmsprop", "norm", 5.0, 0.0),
    ("adagrad", "value", 0.0, 0.0),  # no clipping
    ("sgd", "value", 0.002, 0.0),
])
@pytest.mark.parametrize("size", [2, 3])
def test_a_team_update_is_the_one_process_update(name, clip_mode, clip, wd, size):
    """Each process clips and updates its block of every parameter and of the optimizer's state:
    together, bitwise what one process makes of the same gradients, step after step (3 processes:
    blocks of uneven size)."""
    V, H, T, B = 11, 6, 5, 4
    model = CharRNN("lstm", V, H, 2, seed=2)
    opt = make_optimizer(name, model.params, TrainingConfig(weight_decay=wd))
    alone, alone_opt = {k: p.copy() for k, p in model.params.items()}, make_optimizer(name, model.params,
                                                                                        TrainingConfig(weight_decay=wd))

    def apply(grads, args, share):
        clip_and_step(opt, model.params, grads, clip_mode, clip, *args, share)

    team = make_team(size, model, B, T, apply, list(opt.state.values()))
    try:
        state = model.zero_state(B)
        for step in range(1, 4):
            x = np.random.default_rng(step).integers(0, V, (T + 1, B))
            _, state, grads = one_step(model, team, x[:-1], x[1:], state, None, None)
            norm = global_norm(grads)
            same, before = {k: g.copy() for k, g in grads.items()}, {k: p.copy() for k, p in alone.items()}
            team.update(apply, grads, 0.01, norm, opt.t + 1)
            clip_and_step(alone_opt, alone, same, clip_mode, clip, 0.01, norm, step)
            assert opt.t == alone_opt.t == step
            for k in alone:
                assert not np.array_equal(alone[k], before[k]), k  # the step moved every parameter
                np.testing.assert_array_equal(model.params[k], alone[k], err_msg=k)
                for slot in opt.slots:
                    np.testing.assert_array_equal(opt.state[slot][k], alone_opt.state[slot][k], err_msg=f"{slot}.{k}")
                np.testing.assert_array_equal(grads[k], same[k], err_msg=f"clipped {k}")
    finally:
        team.close()


def test_the_automatic_choice():
    assert auto_team(512, {}, cores=2) == 2
    assert auto_team(512, {}, cores=1) == 1  # one core: nothing to split
    assert auto_team(511, {}, cores=8) == 1  # odd: the units do not halve
    assert auto_team(64, {}, cores=2) == 1  # small: the calls are too short to split
    assert auto_team(512, {"PMI_SIZE": "2"}, cores=2) == 1  # an MPI job uses the cores already
    cfg = from_dict({"model": {"hidden_size": 512}})
    assert plan_threads(cfg.training, cfg.model, environ={}, cores=2) == 1  # one BLAS thread per process
    assert plan_threads(cfg.training, cfg.model, environ={}, cores=8) == 4
    assert plan_threads(cfg.training, cfg.model, threads=3, environ={}, cores=8) == 3  # --threads wins
    assert team_size(cfg.training, cfg.model, {"OPENBLAS_NUM_THREADS": "1"}, cores=2) == 2
    assert team_size(cfg.training, cfg.model, {}, cores=2) == 1  # NumPy loaded with a thread per core
    assert team_size(cfg.training, cfg.model, {"OPENBLAS_NUM_THREADS": "2"}, cores=2) == 1
    off = from_dict({"model": {"hidden_size": 512}, "training": {"unit_split": 1}})
    assert plan_threads(off.training, off.model, environ={}, cores=2) is None  # the BLAS default
    assert team_size(off.training, off.model, {"OPENBLAS_NUM_THREADS": "1"}, cores=2) == 1


def test_a_split_that_does_not_divide_the_units_is_refused():
    with pytest.raises(ConfigError, match="training.unit_split: 5 processes cannot share model.hidden_size 12"):
        from_dict({"model": {"hidden_size": 12}, "training": {"unit_split": 5}})


@pytest.mark.parametrize("flags,pin,named", [
    ("fpu avx avx2 fma avx512f avx512bw", "Haswell", "AVX2 on this AVX-512 CPU"),  # the machines of 2026-11-25
    ("fpu avx avx2 fma", "SandyBridge", "AVX on this AVX2 CPU"),
    ("fpu avx avx2 fma", "Haswell", None),  # the pin picks what the CPU runs anyway
    ("fpu avx avx2 fma avx512f", "SkylakeX", None),
    ("fpu avx avx2 fma avx512f", "", None),  # no pin
    ("fpu avx avx2 fma avx512f", "Penryn", None),  # a name not judged
])
def test_a_blas_pin_below_the_cpu_is_named(tmp_path, flags, pin, named):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    note = blas_pin_note({"OPENBLAS_CORETYPE": pin} if pin else {}, str(cpuinfo))
    if named is None:
        assert note is None
    else:
        assert f"OPENBLAS_CORETYPE={pin} holds NumPy's products to {named}" in note and "env -u OPENBLAS_CORETYPE" in note
    assert cpu_vector_level(str(tmp_path / "missing")) == 0  # no /proc (not Linux): nothing is claimed


def test_charrnn_train_names_the_pin(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "cpu_vector_level", lambda *a: 3)  # as on an AVX-512 CPU
    raw = make_config(tmp_path, max_steps=2)
    r = CliRunner().invoke(main, ["train", str(write_yaml(tmp_path, raw))], env={"OPENBLAS_CORETYPE": "Haswell"})
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("blas:")]
    assert len(lines) == 1 and "OPENBLAS_CORETYPE=Haswell holds NumPy's products to AVX2 on this AVX-512 CPU" in lines[0]
    r = CliRunner().invoke(main, ["train", str(write_yaml(tmp_path, raw)), "--overwrite"], env={"OPENBLAS_CORETYPE": None})
    assert r.exit_code == 0 and "blas:" not in r.output, r.output


def losses(run_dir, key="train_loss"):
    return [r[key] for r in map(json.loads, open(os.path.join(run_dir, "metrics.jsonl"))) if r.get(key) is not None]


def test_training_with_a_team_follows_one_process(tmp_path):
    """The CLI end to end: the same losses to float32 rounding, checkpoints, resume, no process left."""
    runs = {}
    for split in (1, 2):
        (tmp_path / str(split)).mkdir()
        raw = make_config(tmp_path / str(split), max_steps=8, unit_split=split)
        raw["model"]["weight_drop"] = 0.25  # the masks reach the helper through the step's inputs
        raw["model"]["embedding"] = 6  # the helper updates its block of the embedding too
        r = CliRunner().invoke(main, ["train", str(write_yaml(tmp_path / str(split), raw)), "--quiet"])
        assert r.exit_code == 0, r.output
        runs[split] = losses(raw["output"]["dir"]), losses(raw["output"]["dir"], "val_loss")
        assert not children(os.getpid())  # the helper is gone
    (train1, val1), (train2, val2) = runs[1], runs[2]
    assert len(train1) == len(train2) == 4 and len(val1) == len(val2) == 2  # validation ran through the team too
    np.testing.assert_allclose(train2, train1, rtol=1e-4)
    np.testing.assert_allclose(val2, val1, rtol=1e-4)
    run2 = tmp_path / "2" / "run"
    r = CliRunner().invoke(main, ["train", str(tmp_path / "2" / "cfg.yaml"), "--resume", str(run2 / "latest.npz"),
                                  "--set", "training.max_steps=12", "--quiet"])
    assert r.exit_code == 0, r.output
    assert ckpt.load(str(run2 / "latest.npz")).scalar("train.step") == 12


@pytest.mark.parametrize("how", ["raises", "killed"])
def test_a_failed_helper_stops_the_run_with_one_line(tmp_path, monkeypatch, how):
    real = CharRNN.forward
    calls = {"n": 0}

    def forward(self, idx, targets, state, masks=None, resets=None, team=SOLO, **kw):
        if team.rank == 1 and (masks is None) == (how == "killed"):  # in the helper, its own count
            calls["n"] += 1  # raises: of training steps (dropout masks); killed: of validation passes
            if calls["n"] == 6:
                if how == "killed":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise MemoryError("out of memory (a test)")
        return real(self, idx, targets, state, masks, resets, team=team, **kw)

    monkeypatch.setattr(CharRNN, "forward", forward)
    raw = make_config(tmp_path, max_steps=20, checkpoint_every=4, unit_split=2)
    r = CliRunner().invoke(main, ["train", str(write_yaml(tmp_path, raw)), "--quiet"])
    assert r.exit_code == 1
    why = "MemoryError: out of memory (a test)" if how == "raises" else "it was killed by SIGKILL"
    line = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(line) == 1 and "a helper process of the training step failed: " + why in line[0], r.output
    if how == "raises":
        assert "step was not applied" in line[0] and "Last good checkpoint" in line[0]
    else:
        assert "during validation" in line[0]
    assert "Traceback" not in r.output
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step") == 4
    assert not children(os.getpid())
    assert not [f for f in os.listdir(tmp_path / "run") if "tmp" in f]


def test_a_helper_failing_in_the_update_stops_the_run_unsaved(tmp_path, monkeypatch):
    """The parameters are then part updated: nothing is saved after the last checkpoint."""
    from charrnn_cli.training import trainer as training

    real, calls = training.clip_and_step, {"n": 0}

    def clip_and_step(*args):
        share = args[-1]
        if share is not None and share.__self__.rank == 1:  # in the helper, its own count of updates
            calls["n"] += 1
            if calls["n"] == 6:
                raise MemoryError("out of memory (a test)")
        return real(*args)

    monkeypatch.setattr(training, "clip_and_step", clip_and_step)
    raw = make_config(tmp_path, max_steps=20, checkpoint_every=4, unit_split=2)
    r = CliRunner().invoke(main, ["train", str(write_yaml(tmp_path, raw)), "--quiet"])
    assert r.exit_code == 1
    line = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(line) == 1 and "failed: MemoryError: out of memory (a test)" in line[0], r.output
    assert "only partly applied, and it is not saved" in line[0] and "Last good checkpoint" in line[0]
    assert "Traceback" not in r.output
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step") == 4
    assert not children(os.getpid())
    assert not [f for f in os.listdir(tmp_path / "run") if "tmp" in f]


def start_training(tmp_path, **training):
    raw = make_config(tmp_path, max_steps=1_000_000, checkpoint_every=1_000_000, eval_every=1_000_000,
                      log_every=1, unit_split=2, **training)
    proc = subprocess.Popen([sys.executable, "-m", "charrnn_cli", "train", str(write_yaml(tmp_path, raw)), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.05)
    assert metrics.exists(), proc.communicate()
    helpers = children(proc.pid)
    assert len(helpers) == 1
    return proc, helpers[0]


def gone_within(pid, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        fields = proc_stat(pid)
        if fields is None or fields[0] == "Z":
            return True
        time.sleep(0.02)
    return False


def test_ctrl_c_to_the_whole_group_saves_and_stops_both(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group: process 0 answers it, the helper ignores it."""
    proc, helper = start_training(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT: saved" in err and "Traceback" not in err
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step") >= 1
    assert gone_within(helper, 5)


def test_a_helper_outlives_no_killed_parent(tmp_path):
    proc, helper = start_training(tmp_path)
    proc.kill()  # SIGKILL: process 0 cannot stop its helper itself
    proc.communicate(timeout=30)
    assert gone_within(helper, 5)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the automatic team needs 2 cores")
def test_charrnn_train_takes_the_team_by_itself_on_two_cores(tmp_path):
    """As a user runs it: a fresh process, NumPy not yet loaded, hidden_size 128, no setting."""
    raw = make_config(tmp_path, max_steps=4)
    raw["model"]["hidden_size"] = 128
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-m", "charrnn_cli", "train", str(write_yaml(tmp_path, raw))],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "cores: 2 processes share each step, 64 of the 128 hidden units each" in out.stdout + out.stderr
    raw["training"]["unit_split"] = 1
    raw["output"]["dir"] = str(tmp_path / "one")
    out = subprocess.run([sys.executable, "-m", "charrnn_cli", "train", str(write_yaml(tmp_path, raw))],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "cores:" not in out.stdout + out.stderr


def test_exact_resume_with_a_team_is_bitwise(tmp_path):
    """50 steps straight (crossing an epoch wrap, the last chunk short) against 23 + 27 resumed."""
    from charrnn_cli.training.loop import train

    raw = make_config(tmp_path, max_steps=50, eval_every=10, checkpoint_every=100, unit_split=2)
    straight = train(from_dict(raw), quiet=True)
    assert straight.progress.epoch == 1
    a = params_of(os.path.join(straight.out_dir, "latest.npz"))
    raw["output"]["dir"] = str(tmp_path / "run2")
    raw["training"]["max_steps"] = 23
    train(from_dict(raw), quiet=True)
    raw["training"]["max_steps"] = 50
    resumed = train(from_dict(raw), resume=str(tmp_path / "run2" / "latest.npz"), quiet=True)
    b = params_of(os.path.join(resumed.out_dir, "latest.npz"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not children(os.getpid())


def test_a_helper_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    raw = make_config(tmp_path, max_steps=4, unit_split=2)
    r = CliRunner().invoke(main, ["train", str(write_yaml(tmp_path, raw)), "--quiet"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "could not start the helper processes of the training step: [Errno 11]" in r.output
    assert "training.unit_split=1" in r.output
