"""Nothing a user does loses a run: run folders, locks, the encoded cache, checkpoints read back,
signals, and the input checks around them. Each test reproduces a way work was lost or a
traceback shown, and asserts the behaviour that replaced it."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.io import cache as cache_mod
from charrnn_cli.io import data as data_mod
from charrnn_cli.io.config import ConfigError, from_dict, load_config
from charrnn_cli.training.runfolder import read_metrics
from charrnn_cli.training.loop import train
from charrnn_cli.training.trainer import Trainer

from conftest import invoke, make_config, make_text, one_line, params_of, steps_logged, wait_for_lines, write_yaml


# ---- the run folder -------------------------------------------------------------------------


def test_a_new_run_refuses_a_folder_holding_a_run_and_overwrite_replaces_it(tmp_path):
    cfg = write_yaml(tmp_path, make_config(tmp_path))
    assert invoke("train", cfg, "--quiet").exit_code == 0
    best = (tmp_path / "run" / "best.npz").read_bytes()
    metrics = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    r = invoke("train", cfg, "--quiet", "--set", "training.max_steps=2")
    assert r.exit_code == 1 and one_line(r), r.output
    assert "already holds a run" in r.output and str(tmp_path / "run") in r.output
    assert "--resume" in r.output and "--overwrite" in r.output and "output.dir" in r.output
    assert (tmp_path / "run" / "best.npz").read_bytes() == best  # nothing touched
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics
    r = invoke("train", cfg, "--quiet", "--overwrite", "--set", "training.max_steps=2")
    assert r.exit_code == 0, r.output
    assert steps_logged(tmp_path / "run") == [2]  # the old run's lines are gone, not appended to
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step") == 2


def test_resume_continues_in_the_checkpoints_folder_unless_told_otherwise(tmp_path):
    raw = make_config(tmp_path)  # the config says output.dir: run
    cfg = write_yaml(tmp_path, raw)
    r = invoke("train", cfg, "--quiet", "--set", f"output.dir={tmp_path / 'ctrlc'}", "--set", "training.max_steps=4")
    assert r.exit_code == 0, r.output
    r = invoke("train", cfg, "--quiet", "--resume", tmp_path / "ctrlc" / "latest.npz")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "run").exists()  # the config's folder was not written
    assert steps_logged(tmp_path / "ctrlc") == [2, 4, 6, 8]
    assert ckpt.load(str(tmp_path / "ctrlc" / "latest.npz")).scalar("train.step") == 8
    # naming another folder on the command line writes there, and leaves the first alone
    r = invoke("train", cfg, "--quiet", "--resume", tmp_path / "ctrlc" / "latest.npz",
               "--set", f"output.dir={tmp_path / 'other'}", "--set", "training.max_steps=10")
    assert r.exit_code == 0, r.output
    assert steps_logged(tmp_path / "other") == [10] and steps_logged(tmp_path / "ctrlc") == [2, 4, 6, 8]


def _start_long_run(tmp_path, **training):
    raw = make_config(tmp_path, **dict(dict(max_steps=1_000_000, checkpoint_every=5, eval_every=1_000_000,
                                            log_every=1), **training))
    cfg = write_yaml(tmp_path, raw)
    proc = subprocess.Popen([sys.executable, "-m", "charrnn_cli", "train", str(cfg), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return cfg, proc


def test_a_locked_folder_refuses_a_second_run_and_sigkill_releases_it_then_resume_trims_the_log(tmp_path):
    cfg, proc = _start_long_run(tmp_path)
    try:
        wait_for_lines(tmp_path / "run" / "metrics.jsonl", 8, proc)
        r = invoke("train", cfg, "--quiet", "--overwrite")
        assert r.exit_code == 1 and one_line(r), r.output
        assert f"another run (pid {proc.pid} on " in r.output and str(tmp_path / "run") in r.output
    finally:
        proc.kill()  # SIGKILL: no handler runs, the kernel drops the lock
        proc.wait()
    saved = ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step")
    assert steps_logged(tmp_path / "run")[-1] >= saved  # usually past it: steps logged after the checkpoint
    r = invoke("train", cfg, "--quiet", "--resume", tmp_path / "run" / "latest.npz",
               "--set", f"training.max_steps={saved + 3}")
    assert r.exit_code == 0, r.output
    assert steps_logged(tmp_path / "run") == list(range(1, saved + 4))  # every step once, in order


def test_resume_drops_the_lines_logged_after_the_checkpoint(tmp_path):
    import shutil

    raw = make_config(tmp_path, max_steps=4, log_every=1)
    train(from_dict(raw), quiet=True)
    shutil.copy(tmp_path / "run" / "latest.npz", tmp_path / "step4.npz")
    raw["training"]["max_steps"] = 8
    train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True)
    assert steps_logged(tmp_path / "run") == list(range(1, 9))
    shutil.copy(tmp_path / "step4.npz", tmp_path / "run" / "latest.npz")  # as if killed after logging step 8
    raw["training"]["max_steps"] = 6
    train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True)
    assert steps_logged(tmp_path / "run") == list(range(1, 7))


def test_temporary_files_of_a_killed_save_are_swept_by_the_next_run(tmp_path):
    raw = make_config(tmp_path, max_steps=2)
    train(from_dict(raw), quiet=True)
    left = tmp_path / "run" / ".latest.npz.k3j2h1.tmp"  # SIGKILL in the middle of a checkpoint write
    left.write_bytes(b"PK half a checkpoint")
    raw["training"]["max_steps"] = 4
    train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True)
    assert not left.exists() and not [f for f in os.listdir(tmp_path / "run") if f.endswith(".tmp")]


def test_the_lock_is_released_at_the_end_of_a_run(tmp_path):
    raw = make_config(tmp_path, max_steps=2)
    train(from_dict(raw), quiet=True)
    raw["training"]["max_steps"] = 4
    res = train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True)  # not refused
    assert res.progress.step == 4


def test_metrics_lines_are_whole_and_a_torn_last_line_is_skipped(tmp_path, monkeypatch):
    raw = make_config(tmp_path, max_steps=4)
    train(from_dict(raw), quiet=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as fh:
        fh.write('{"step": 5, "epoch": 0.1, "chars_se')  # a write cut short by a full disk
    said = []
    records = read_metrics(str(metrics), said.append)
    assert [r["step"] for r in records][-1] == 4 and "torn last line" in said[0]
    r = invoke("plot", tmp_path / "run", "-o", tmp_path / "c.png")
    assert r.exit_code == 0 and "torn last line" in r.output and (tmp_path / "c.png").exists()
    raw["training"]["max_steps"] = 6
    train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True)
    lines = metrics.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn line is gone, nothing glued onto it
    assert steps_logged(tmp_path / "run") == [2, 4, 6]

    # a short write (the disk filled mid-line) is cut back off, and the error names the file
    from charrnn_cli.training import runfolder

    real_write = os.write
    folder = runfolder.RunFolder(str(tmp_path / "run"))
    folder.claim(str(tmp_path / "run" / "latest.npz"))
    folder.start()
    size = metrics.stat().st_size
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    with pytest.raises(OSError) as e:
        folder.log({"step": 7, "train_loss": 1.0})
    monkeypatch.setattr(os, "write", real_write)
    folder.release()
    assert e.value.filename == str(metrics) and metrics.stat().st_size == size


def test_the_stop_line_says_which_checkpoint_to_use(tmp_path):
    cfg = write_yaml(tmp_path, make_config(tmp_path, max_steps=3, eval_every=100))
    r = invoke("train", cfg, "--quiet", "--set", "data.val_fraction=0")  # no validation: no best.npz
    assert r.exit_code == 0, r.output
    assert f"there is no best.npz: use {tmp_path / 'run' / 'latest.npz'} (step 3)" in r.output
    assert not (tmp_path / "run" / "best.npz").exists()
    r = invoke("train", cfg, "--quiet", "--overwrite", "--set", "training.eval_every=2")
    assert r.exit_code == 0, r.output
    assert f"best model: {tmp_path / 'run' / 'best.npz'} (step " in r.output


def test_a_read_only_output_folder_is_found_before_any_work(tmp_path, monkeypatch):
    import tempfile

    raw = make_config(tmp_path)
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **kw):  # as root, chmod does not stop writes: refuse them here instead
        if dir == str(tmp_path / "run"):
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert r.exit_code == 1 and one_line(r) and "is not writable: Permission denied" in r.output
    assert not (tmp_path / "cache").exists()  # the data was not even encoded


def test_a_full_disk_names_the_file_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    raw = make_config(tmp_path, max_steps=4, checkpoint_every=2)
    train(from_dict(raw), quiet=True)
    before = (tmp_path / "run" / "latest.npz").read_bytes()

    def savez(fh, **arrays):
        fh.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", savez)
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet", "--resume", tmp_path / "run" / "latest.npz",
               "--set", "training.max_steps=6")
    assert r.exit_code == 1 and one_line(r), r.output
    assert f"cannot read or write {tmp_path / 'run'}" in r.output and "No space left on device" in r.output
    assert (tmp_path / "run" / "latest.npz").read_bytes() == before
    assert not [f for f in os.listdir(tmp_path / "run") if "tmp" in f]


# ---- the encoded cache ----------------------------------------------------------------------


def test_a_file_edited_in_place_with_its_timestamp_restored_is_encoded_again(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abcabcabc" * 100)
    st = os.stat(f)
    first = cache_mod.prepare(str(f), str(tmp_path / "cache"))
    assert len(first.vocab) == 3
    f.write_text("xyzxyzxyz" * 100)  # same size, other characters
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p, rsync -a and tar do
    assert os.stat(f).st_size == st.st_size and os.stat(f).st_mtime_ns == st.st_mtime_ns
    again = cache_mod.prepare(str(f), str(tmp_path / "cache"))
    assert not again.reused and again.vocab.chars == "xyz"
    assert cache_mod.prepare(str(f), str(tmp_path / "cache")).reused  # unchanged: reused


def _damage(kind, npy, meta):
    if kind == "truncated":
        with open(npy, "r+b") as fh:
            fh.truncate(os.path.getsize(npy) - 10)
    elif kind == "out of range":
        with open(npy, "r+b") as fh:
            fh.seek(-1, 2)
            fh.write(bytes([200]))
    elif kind == "bad vocabulary":
        with open(meta) as fh:
            m = json.load(fh)
        m["vocab"] = m["vocab"][::-1]
        with open(meta, "w") as fh:
            json.dump(m, fh)
    elif kind == "vocabulary not JSON":
        with open(meta, "r+") as fh:
            fh.truncate(20)
    elif kind == "bad header":
        with open(npy, "r+b") as fh:
            fh.write(b"junk")
    elif kind == "missing npy":
        os.unlink(npy)


@pytest.mark.parametrize("kind", ["truncated", "out of range", "bad vocabulary", "vocabulary not JSON",
                                  "bad header", "missing npy"])
def test_a_broken_cache_is_encoded_again_with_one_line(tmp_path, kind):
    f = make_text(tmp_path / "t.txt")
    good = cache_mod.prepare(str(f), str(tmp_path / "cache"))
    expected = np.asarray(good.data).copy()
    _, npy, meta = cache_mod._cache_paths(str(f), str(tmp_path / "cache"))
    _damage(kind, npy, meta)
    said = []
    again = cache_mod.prepare(str(f), str(tmp_path / "cache"), echo=said.append)
    assert not again.reused and len(said) == 1 and "is damaged" in said[0] and "encoding" in said[0]
    np.testing.assert_array_equal(np.asarray(again.data), expected)
    assert cache_mod.prepare(str(f), str(tmp_path / "cache"), echo=said.append).reused and len(said) == 1


@pytest.mark.parametrize("fault", ["interrupt", "disk full"])
def test_encoding_leaves_no_temporary_file_on_any_way_out(tmp_path, monkeypatch, fault):
    f = make_text(tmp_path / "t.txt")
    (tmp_path / "cache").mkdir()
    base, npy, _ = cache_mod._cache_paths(str(f), str(tmp_path / "cache"))
    stale = base + ".npy.tmp99999.npy"  # left by a process killed with SIGKILL
    open(stale, "wb").write(b"x" * 1000)
    real = data_mod.codepoint_chunks
    passes = {"n": 0}

    def chunks(path):
        passes["n"] += 1
        for i, c in enumerate(real(path)):
            yield c
            if passes["n"] == 2:  # the encoding pass, with its temporary file open
                assert any(".tmp" in n for n in os.listdir(tmp_path / "cache"))
                if fault == "interrupt":
                    raise KeyboardInterrupt
                raise OSError(28, "No space left on device")

    monkeypatch.setattr(data_mod, "codepoint_chunks", chunks)
    with pytest.raises(KeyboardInterrupt if fault == "interrupt" else OSError) as e:
        cache_mod.prepare(str(f), str(tmp_path / "cache"))
    if fault == "disk full":
        assert e.value.filename == npy
    assert sorted(os.listdir(tmp_path / "cache")) == [os.path.basename(base) + ".lock"]  # the stale one too


def test_a_sweep_leaves_the_other_modes_encoding_alone(tmp_path):
    f = make_text(tmp_path / "t.txt")
    (tmp_path / "cache").mkdir()
    _, npy_lines, _ = cache_mod._cache_paths(str(f), str(tmp_path / "cache"), "lines")
    busy = npy_lines + ".tmp4242.npy"  # lines mode encoding the same file right now, under its own lock
    open(busy, "wb").write(b"x")
    cache_mod.prepare(str(f), str(tmp_path / "cache"))  # stream mode sweeps only its own leftovers
    assert os.path.exists(busy)


def test_sigterm_while_preparing_stops_with_one_line_and_no_temporary_file(tmp_path, monkeypatch):
    raw = make_config(tmp_path)
    real = data_mod.codepoint_chunks
    passes = {"n": 0}

    def chunks(path):
        passes["n"] += 1
        for c in real(path):
            yield c
            if passes["n"] == 2:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)  # a long encoding: the signal must not wait for it

    monkeypatch.setattr(data_mod, "codepoint_chunks", chunks)
    t = time.monotonic()
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert time.monotonic() - t < 5
    assert r.exit_code == 143 and "interrupted by SIGTERM while preparing the data; nothing was saved" in r.output
    cache = tmp_path / "run" / "data_cache"
    assert not [n for n in os.listdir(cache) if ".tmp" in n]


def test_resume_from_an_older_checkpoint_of_the_folder_is_refused_unless_overwrite(tmp_path):
    """`--resume run/best.npz` from before the last save (or an older copy) would go on over the
    run's later steps: refused, nothing touched, the ways on named; --overwrite goes ahead."""
    raw = make_config(tmp_path, max_steps=2, eval_every=1000)
    cfg = write_yaml(tmp_path, raw)
    assert invoke("train", cfg, "--quiet").exit_code == 0
    run = tmp_path / "run"
    (run / "old.npz").write_bytes((run / "latest.npz").read_bytes())
    assert invoke("train", "--resume", run / "latest.npz", "--set", "training.max_steps=6", "--quiet").exit_code == 0
    before = {f: (run / f).read_bytes() for f in ("latest.npz", "best.npz", "metrics.jsonl")}
    r = invoke("train", "--resume", run / "old.npz", "--set", "training.max_steps=8", "--quiet")
    assert r.exit_code == 1 and one_line(r), r.output
    assert (f"{run / 'old.npz'} is at step 2, behind {run / 'latest.npz'} at step 6: going on from it here would "
            f"replace the run's 4 later steps. Go on from where the run stands with charrnn train --resume "
            f"{run / 'latest.npz'}") in r.output
    assert all((run / f).read_bytes() == b for f, b in before.items())
    r = invoke("train", "--resume", run / "latest.npz", "--set", "training.max_steps=8", "--quiet")
    assert r.exit_code == 0, r.output  # the run itself goes on
    r = invoke("sample", run)  # a run folder given where a checkpoint belongs: which ones it holds
    assert r.exit_code == 1 and r.output == (f"Error: checkpoint path is a directory: {run} (a run folder: give one "
                                             f"of its checkpoints, {run / 'best.npz'} or {run / 'latest.npz'})\n")
    r = invoke("train", "--resume", run / "old.npz", "--set", "training.max_steps=4", "--quiet", "--overwrite")
    assert r.exit_code == 0 and ckpt.load(str(run / "latest.npz")).scalar("train.step") == 4, r.output
    (run / "latest.npz").write_bytes(b"damaged")  # a latest.npz that cannot be read is no bar to going back
    r = invoke("train", "--resume", run / "old.npz", "--set", "training.max_steps=3", "--quiet")
    assert r.exit_code == 0 and ckpt.load(str(run / "latest.npz")).scalar("train.step") == 3, r.output


# ---- resume after the data changed ----------------------------------------------------------


def test_resume_warns_when_the_data_changed(tmp_path):
    raw = make_config(tmp_path, max_steps=2)
    train(from_dict(raw), quiet=True)
    f = tmp_path / "text.txt"
    f.write_text(f.read_text() + " the cat sat")  # appended text, same characters
    raw["training"]["max_steps"] = 4
    said = []
    train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True, echo=said.append)
    assert any("the data changed" in s and "3,000 -> 3,012 characters" in s and "not exact" in s for s in said)
    said.clear()
    raw["training"]["max_steps"] = 6
    train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True, echo=said.append)
    assert not any("changed" in s for s in said)  # unchanged since: no warning
    text = f.read_text()
    f.write_text(text[:100] + ("a" if text[100] != "a" else "t") + text[101:])  # same length, one character
    raw["training"]["max_steps"] = 8
    train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=True, echo=said.append)
    assert any("the same length but different text" in s for s in said)


def test_resume_on_a_text_with_other_characters_says_which_and_what_to_do(tmp_path):
    raw = make_config(tmp_path, max_steps=2)
    train(from_dict(raw), quiet=True)
    f = tmp_path / "text.txt"
    f.write_text(f.read_text().replace("ß", "s") + "{~}")  # gains three characters, loses one
    latest = tmp_path / "run" / "latest.npz"
    before = latest.read_bytes()
    r = invoke("train", "--resume", latest, "--set", "training.max_steps=4")
    assert r.exit_code == 1 and one_line(r), r.output
    assert (f"cannot go on with {f}: the text has 3 characters the run never saw ('{{', '}}', '~') and lacks 1 it "
            f"had ('ß'); a run's characters are fixed when it starts, so start a new run on this text, without "
            f"--resume and with --set output.dir=NEW_FOLDER") in r.output
    assert latest.read_bytes() == before


# ---- checkpoints read back ------------------------------------------------------------------


def _edited(tmp_path, good, name, **changes):
    with np.load(good, allow_pickle=False) as z:
        arrays = dict(z)
    arrays.update(changes)
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def _damaged_checkpoints(tmp_path):
    raw = make_config(tmp_path, max_steps=4)
    train(from_dict(raw), quiet=True)
    good = str(tmp_path / "run" / "latest.npz")
    with np.load(good, allow_pickle=False) as z:
        a = dict(z)
    return {
        _edited(tmp_path, good, "transposed", **{"rnn.weight_hh_l0": a["rnn.weight_hh_l0"].T.copy()}):
            "array rnn.weight_hh_l0 has shape (12, 48), expected (48, 12)",
        _edited(tmp_path, good, "shortvocab", vocab=a["vocab"][:-1]): "array rnn.weight_ih_l0 has shape",
        _edited(tmp_path, good, "stringstep", **{"train.step": np.array("4")}): "array train.step should be an integer",
        _edited(tmp_path, good, "rngnotjson", rng_state=np.array("{not json")): "array rng_state is not a random",
        _edited(tmp_path, good, "stateshape", **{"state.h": a["state.h"][:, :2]}): "array state.h should be",
        _edited(tmp_path, good, "historywidth", **{"history.val": np.zeros((3, 5))}): "array history.val should be",
        _edited(tmp_path, good, "intweights", **{"decoder.bias": np.zeros(a["decoder.bias"].shape, np.int64)}):
            "array decoder.bias should hold floats",
        _edited(tmp_path, good, "floatvocab", vocab=a["vocab"].astype(float)): "array vocab should hold integer",
        _edited(tmp_path, good, "unsortedvocab", vocab=a["vocab"][::-1].copy()): "array vocab should be sorted",
        _edited(tmp_path, good, "optimshape", **{"optim.m.Wy": a["optim.m.Wy"][:1]}): "array optim.m.Wy should be",
        _edited(tmp_path, good, "negativestep", **{"train.step": np.array(-3)}): "array train.step should be >= 0",
    }, raw


@pytest.mark.parametrize("command", ["sample", "eval", "info", "resume"])
def test_damaged_checkpoints_give_one_line_naming_the_array(tmp_path, command):
    cases, raw = _damaged_checkpoints(tmp_path)
    cfg = write_yaml(tmp_path, raw)
    for path, message in cases.items():
        if command == "resume":
            args = ["train", cfg, "--quiet", "--resume", path, "--set", f"output.dir={tmp_path / 'r2'}",
                    "--overwrite"]
        else:
            args = [command, path] + ([tmp_path / "text.txt"] if command == "eval" else [])
        r = invoke(*args)
        assert r.exit_code == 1 and one_line(r), (path, r.output)
        assert message in r.output, (path, r.output)


def test_nan_parameters_info_says_so_sample_and_eval_refuse(tmp_path):
    raw = make_config(tmp_path, max_steps=2)
    train(from_dict(raw), quiet=True)
    with np.load(tmp_path / "run" / "latest.npz", allow_pickle=False) as z:
        a = dict(z)
    w = a["rnn.weight_hh_l1"].copy()
    w[0, 0] = np.nan
    path = _edited(tmp_path, str(tmp_path / "run" / "latest.npz"), "nan", **{"rnn.weight_hh_l1": w})
    r = invoke("info", path)
    assert r.exit_code == 0 and "NaN or infinite values in rnn.weight_hh_l1" in r.output
    assert json.loads(invoke("info", path, "--json").output)["nonfinite_parameters"] == ["rnn.weight_hh_l1"]
    for args in (["sample", path], ["eval", path, tmp_path / "text.txt"]):
        r = invoke(*args)
        assert r.exit_code == 1 and one_line(r) and "NaN or infinite" in r.output, r.output


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_an_infinite_validation_loss_keeps_info_working_and_json_strict(tmp_path, monkeypatch):
    raw = make_config(tmp_path, max_steps=4, eval_every=2)
    calls = {"n": 0}
    real = Trainer.validation_loss

    def validation_loss(self):
        calls["n"] += 1
        return float("inf") if calls["n"] == 2 else real(self)

    monkeypatch.setattr(Trainer, "validation_loss", validation_loss)
    train(from_dict(raw), quiet=True)
    latest = tmp_path / "run" / "latest.npz"
    r = invoke("info", latest)
    assert r.exit_code == 0 and "val history" in r.output and "Traceback" not in r.output, r.output
    d = _strict_json(invoke("info", latest, "--json").output)
    assert [v for _, v in d["val_history"]][1] is None
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        _strict_json(line)
    assert any(_strict_json(line)["step"] == 4 and _strict_json(line)["val_loss"] is None
               for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())


# ---- input checks ---------------------------------------------------------------------------


@pytest.fixture
def trained(tmp_path):
    raw = make_config(tmp_path, max_steps=4)
    train(from_dict(raw), quiet=True)
    return tmp_path / "run" / "latest.npz"


def test_a_tiny_temperature_is_argmax(trained):
    argmax = invoke("sample", trained, "--seed", "the", "--length", 40, "--argmax")
    for t in ("1e-300", "1e-30", "1e-6"):
        r = invoke("sample", trained, "--seed", "the", "--length", 40, "--temperature", t, "--rng-seed", 3)
        assert r.exit_code == 0 and r.output == argmax.output, t
        r = invoke("sample", trained, "--seed", "the", "--length", 20, "--temperature", t, "--num-samples", 2)
        assert r.exit_code == 0 and r.output.count(argmax.output[:23].strip()) == 2, (t, r.output)


@pytest.mark.parametrize("args,message", [
    (["--seed", ""], "--seed"),
    (["--rng-seed", "-1"], "--rng-seed"),
    (["--num-samples", str(10 ** 12), "--length", "5"], "out of memory"),
])
def test_sample_input_errors_are_one_line(trained, args, message):
    r = invoke("sample", trained, *args)
    assert r.exit_code in (1, 2) and message in r.output and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("key,value,message", [
    ("training.seed", "-1", "training.seed: must be >= 0"),
    ("training.learning_rate", ".inf", "expected a finite number"),
    ("training.learning_rate", ".nan", "expected a finite number"),
])
def test_config_values_that_gave_tracebacks_or_nan(tmp_path, key, value, message):
    r = invoke("train", write_yaml(tmp_path, make_config(tmp_path)), "--quiet", "--set", f"{key}={value}")
    assert r.exit_code == 1 and one_line(r) and message in r.output, r.output


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("training:\n  learning_rate: 1e-3\n  max_steps: 1e3\n")
    cfg = load_config(str(p))
    assert cfg.training.learning_rate == 0.001 and cfg.training.max_steps == 1000
    cfg = load_config(str(p), ["training.learning_rate=2E-4"])
    assert cfg.training.learning_rate == 0.0002


def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  hidden_size: 64\n  num_layers: 2\n  hidden_size: 128\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'hidden_size': lines 2 and 4 of .*c.yaml"):
        load_config(str(p))


# ---- signals --------------------------------------------------------------------------------


def test_sigint_during_a_long_validation_acts_at_once_and_saves(tmp_path, monkeypatch):
    raw = make_config(tmp_path, max_steps=100, eval_every=3, checkpoint_every=1000)

    def validation_loss(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)  # a validation pass of minutes

    monkeypatch.setattr(Trainer, "validation_loss", validation_loss)
    t = time.monotonic()
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert time.monotonic() - t < 5
    assert r.exit_code == 130 and "interrupted by SIGINT: saved" in r.output, r.output
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step") == 3


def test_sigterm_during_the_final_validation_is_answered(tmp_path, monkeypatch):
    raw = make_config(tmp_path, max_steps=2, eval_every=1000)

    def validation_loss(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

    monkeypatch.setattr(Trainer, "validation_loss", validation_loss)
    t = time.monotonic()
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert time.monotonic() - t < 5 and r.exit_code == 143, r.output
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step") == 2


def test_two_quick_signals_in_a_step_drop_it_and_save_the_run_as_the_step_before_left_it(tmp_path, monkeypatch):
    """An impatient double Ctrl-C lands in a step's compute: that step is dropped, its dropout draws
    put back, and the run saved, so nothing is lost and the resume is bit for bit."""
    from charrnn_cli.nn.model import CharRNN

    raw = make_config(tmp_path, max_steps=8, checkpoint_every=1000, eval_every=1000)  # nothing saved before
    straight = dict(raw, output={"dir": str(tmp_path / "straight")})
    train(from_dict(straight), quiet=True)
    real, calls = CharRNN.backward, []

    def backward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # in the sixth step, after five have finished
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CharRNN, "backward", backward)
    t = time.monotonic()
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert time.monotonic() - t < 5 and r.exit_code == 130, r.output
    latest = str(tmp_path / "run" / "latest.npz")
    assert (f"stopped at once by a second SIGINT: saved {latest} at step 5 (the step under way was dropped); "
            f"resume with: charrnn train --resume {latest}") in r.output
    assert not [f for f in os.listdir(tmp_path / "run") if "tmp" in f]
    monkeypatch.setattr(CharRNN, "backward", real)
    r = invoke("train", "--resume", latest, "--quiet")
    assert r.exit_code == 0 and "step 8" in r.output, r.output
    a, b = params_of(latest), params_of(str(tmp_path / "straight" / "latest.npz"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("more", [1, 2])
def test_the_save_a_signal_asked_for_finishes_despite_a_second_and_a_third_ends_it(tmp_path, monkeypatch, more):
    raw = make_config(tmp_path, max_steps=100, checkpoint_every=1000, eval_every=1000)
    real_step, real_save = Trainer.step, ckpt.atomic_save_npz

    def step(self, lr_of):
        out = real_step(self, lr_of)
        if self.prog.step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # stop after this step, and save
        return out

    def save(path, arrays):
        for _ in range(more):  # while the save runs: Ctrl-C again (and again)
            os.kill(os.getpid(), signal.SIGINT)
        real_save(path, arrays)

    monkeypatch.setattr(Trainer, "step", step)
    monkeypatch.setattr(ckpt, "atomic_save_npz", save)
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert r.exit_code == 130, r.output
    latest = tmp_path / "run" / "latest.npz"
    if more == 1:
        assert f"interrupted by SIGINT: saved {latest} at step 5" in r.output
        assert ckpt.load(str(latest)).scalar("train.step") == 5
    else:
        assert "stopped at once by a third SIGINT; no checkpoint had been saved yet" in r.output  # names no file
        assert not latest.exists()
    assert not [f for f in os.listdir(tmp_path / "run") if "tmp" in f]


def test_a_signal_during_a_periodic_save_stops_right_after_it(tmp_path, monkeypatch):
    """That save already holds the run: the stop takes it as its own, with no step more and no save again."""
    raw = make_config(tmp_path, max_steps=100, checkpoint_every=4, eval_every=1000)
    real_save, saves = ckpt.atomic_save_npz, []

    def save(path, arrays):
        saves.append(int(arrays["train.step"]))
        if len(saves) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # during the periodic save at step 4
        real_save(path, arrays)

    monkeypatch.setattr(ckpt, "atomic_save_npz", save)
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    latest = tmp_path / "run" / "latest.npz"
    assert r.exit_code == 130 and f"interrupted by SIGINT: saved {latest} at step 4" in r.output, r.output
    assert saves == [4] and ckpt.load(str(latest)).scalar("train.step") == 4


def test_a_second_signal_after_the_stops_save_says_the_save_was_made(tmp_path, monkeypatch):
    """The first Ctrl-C's save is done and the run is winding up (its helper being stopped) when
    the second comes: the line says which checkpoint holds the run, not just that files are intact."""
    raw = make_config(tmp_path, max_steps=100, checkpoint_every=1000, eval_every=1000)
    real_step = Trainer.step

    def step(self, lr_of):
        out = real_step(self, lr_of)
        if self.prog.step == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    def close(self):
        os.kill(os.getpid(), signal.SIGINT)  # the second, while the run winds up

    monkeypatch.setattr(Trainer, "step", step)
    monkeypatch.setattr(Trainer, "close", close)
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    latest = tmp_path / "run" / "latest.npz"
    assert r.exit_code == 130 and (f"stopped at once by a second SIGINT: saved {latest} at step 5; resume with: "
                                   f"charrnn train --resume {latest}") in r.output, r.output
    assert ckpt.load(str(latest)).scalar("train.step") == 5


def test_a_second_signal_exits_at_once_without_damaging_files(tmp_path, monkeypatch):
    raw = make_config(tmp_path, max_steps=100, checkpoint_every=2, eval_every=1000)
    real = Trainer.step

    def step(self, lr_of):
        out = real(self, lr_of)
        if self.prog.step == 5:  # a step that will not end: two Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        return out

    monkeypatch.setattr(Trainer, "step", step)
    t = time.monotonic()
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert time.monotonic() - t < 5 and r.exit_code == 130, r.output
    assert "stopped at once by a second SIGINT" in r.output
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step") == 4
    assert not [f for f in os.listdir(tmp_path / "run") if "tmp" in f]
    assert all(json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
