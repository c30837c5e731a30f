"""What charrnn trusts: nothing. A checkpoint, a config, a data file or a signal from outside may
name paths, nest deeply, lie about sizes or arrive at the worst moment; each test is a case that
once read what it should not, wrote where it was not asked, hung or crashed, and asserts the one
clear line (or the clean stop) that replaced it."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.io.config import ConfigError, from_dict
from charrnn_cli.io.cache import prepare
from charrnn_cli.io.data import read_validation_split
from charrnn_cli.training.loop import train
from conftest import invoke, make_config, make_text, refused, wait_for_lines, write_yaml


def trained(tmp_path, **training):
    """A small run's best.npz (its folder: tmp_path/run)."""
    raw = make_config(tmp_path, **training)
    train(from_dict(raw), quiet=True, echo=lambda m: None)
    return tmp_path / "run" / "latest.npz", raw


def arrays_of(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def craft(src, dst, config=None, **arrays):
    """A copy of checkpoint `src` with its stored config changed by config(dict) and arrays replaced."""
    a = arrays_of(src)
    if config is not None:
        raw = json.loads(str(a["config_json"]))
        config(raw)
        a["config_json"] = np.array(json.dumps(raw))
    a.update({k.replace("__", "."): v for k, v in arrays.items()})
    np.savez(dst, **a)
    return dst


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


# ---- a checkpoint's paths: read, never written to --------------------------------------------


@pytest.fixture
def secret(tmp_path):
    p = tmp_path / "secret.txt"
    p.write_text("password: hunter2 {\n" * 50, encoding="utf-8")
    os.chmod(p, 0o600)
    return p


def _point_at(secret, cache_dir):
    def edit(raw):
        raw["data"]["path"] = str(secret)
        raw["data"]["cache_dir"] = str(cache_dir)
    return edit


def test_eval_of_a_crafted_checkpoint_writes_nothing_and_refuses(tmp_path, secret):
    src, _ = trained(tmp_path)
    evil = craft(src, tmp_path / "evil.npz", _point_at(secret, tmp_path / "loot"))
    before = files_under(tmp_path)
    r = invoke("eval", evil)
    assert refused(r) and "other characters" in r.output, r.output
    assert not (tmp_path / "loot").exists()
    assert files_under(tmp_path) == before


def test_eval_of_the_runs_own_split_writes_no_cache_even_when_the_characters_match(tmp_path):
    src, raw = trained(tmp_path)
    shutil_cache = tmp_path / "run" / "data_cache"
    for f in shutil_cache.iterdir():
        f.unlink()
    shutil_cache.rmdir()
    evil = craft(src, tmp_path / "other.npz", lambda c: c["data"].update(cache_dir=str(tmp_path / "loot")))
    before = files_under(tmp_path)
    r = invoke("eval", evil, "--json")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "loot").exists() and files_under(tmp_path) == before
    # and it scores what training's validation scored through its cache
    ours = json.loads(r.output)["nats_per_char"]
    train_dir = tmp_path / "again"
    train(from_dict(dict(raw, output={"dir": str(train_dir)})), quiet=True, echo=lambda m: None)
    r2 = invoke("eval", train_dir / "latest.npz", "--json")  # its own cache is there: read through it
    assert r2.exit_code == 0 and abs(json.loads(r2.output)["nats_per_char"] - ours) < 1e-6


@pytest.mark.parametrize("mode", ["stream", "lines"])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37])
def test_the_in_memory_split_is_the_cached_split(tmp_path, mode, fraction):
    text = make_text(tmp_path / "t.txt", n=5000)
    corpus = prepare(str(text), str(tmp_path / "cache"), mode=mode)
    _, val = corpus.split(fraction, lines=mode == "lines")
    mine, sha1 = read_validation_split(str(text), corpus.vocab, fraction, mode)
    assert np.array_equal(np.asarray(val), mine) and sha1 == corpus.sha1


def test_resume_from_a_crafted_checkpoint_writes_no_cache_of_the_file_it_names(tmp_path, secret):
    src, _ = trained(tmp_path)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    evil = craft(src, folder / "latest.npz", _point_at(secret, tmp_path / "loot"))
    r = invoke("train", "--resume", evil, "--quiet")
    assert r.exit_code == 1 and "Traceback" not in r.output and "never saw" in r.output, r.output
    assert not (tmp_path / "loot").exists()
    assert not any(n.endswith((".npy", ".json")) for n in files_under(folder)), files_under(folder)


def test_a_cache_is_no_more_readable_than_its_text(tmp_path):
    text = make_text(tmp_path / "t.txt")
    os.chmod(text, 0o600)
    corpus = prepare(str(text), str(tmp_path / "cache"))
    for f in (corpus.cache_path, corpus.cache_path[:-4] + ".json"):
        assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0, oct(os.stat(f).st_mode)


def test_sample_novel_on_a_pipe_refuses_instead_of_blocking(tmp_path):
    src, _ = trained(tmp_path, max_steps=2)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    evil = craft(src, tmp_path / "evil.npz", lambda c: c["data"].update(path=str(fifo), mode="lines"))
    r = invoke("sample", evil, "--items", "2", "--novel")
    assert refused(r) and "not a regular file" in r.output, r.output
    r = invoke("eval", evil)
    assert refused(r) and "not a regular file" in r.output, r.output


# ---- a checkpoint's contents: bounded, checked, one line ------------------------------------


def test_deeply_nested_json_in_a_checkpoint_is_refused(tmp_path):
    src, _ = trained(tmp_path, max_steps=2)
    deep = "[" * 100_000 + "]" * 100_000
    for name in ("config_json", "rng_state"):
        bad = craft(src, tmp_path / f"{name}.npz", **{name: np.array(deep)})
        for cmd in (("info",), ("sample", "--length", "5")):
            r = invoke(cmd[0], bad, *cmd[1:])
            assert refused(r) and "RecursionError" not in r.output, (name, cmd, r.output)


def test_a_vocabulary_with_a_lone_surrogate_is_refused_at_load(tmp_path):
    src, _ = trained(tmp_path, max_steps=2)
    v = arrays_of(src)["vocab"].copy()
    v[-1] = 0xDFFF  # the largest stays the largest: still sorted
    bad = craft(src, tmp_path / "s.npz", vocab=v)
    r = invoke("sample", bad, "--length", "5")
    assert refused(r) and "surrogate" in r.output, r.output


def _zip_bomb(src, dst, name, shape):
    """src with member `name` replaced by zeros of `shape`, deflated (a few MB inflating to GB)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename != name + ".npy":
                zout.writestr(info.filename, zin.read(info.filename))
        with zout.open(name + ".npy", "w", force_zip64=True) as fh:
            import io
            buf = io.BytesIO()
            np.lib.format.write_array_header_2_0(buf, header)
            fh.write(buf.getvalue())
            block = bytes(1 << 24)
            for _ in range(int(np.prod(shape)) * 4 // len(block)):
                fh.write(block)
    return dst


def test_a_member_that_inflates_past_what_the_config_implies_is_refused_unread(tmp_path):
    src, _ = trained(tmp_path, max_steps=2)
    bomb = _zip_bomb(src, tmp_path / "bomb.npz", "decoder.bias", (1 << 28,))  # 1 GB of zeros, ~1 MB on disk
    assert os.path.getsize(bomb) < 4 << 20
    t = time.monotonic()
    r = invoke("info", bomb)
    assert refused(r) and "decoder.bias" in r.output and "claims" in r.output, r.output
    assert time.monotonic() - t < 5


def test_a_member_holding_less_than_its_header_says_is_called_truncated(tmp_path):
    src, _ = trained(tmp_path, max_steps=2)
    dst = tmp_path / "short.npz"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info.filename, data[:-8] if info.filename == "decoder.weight.npy" else data)
    r = invoke("info", dst)
    assert refused(r) and "decoder.weight" in r.output and "fewer bytes" in r.output, r.output
    assert "object arrays" not in r.output


@pytest.mark.parametrize("name, value, words", [
    ("format_version", np.array(2.7), "format_version should be a single integer"),
    ("train.elapsed_s", np.array(float("nan")), "train.elapsed_s"),
    ("train.elapsed_s", np.array(-5.0), "train.elapsed_s"),
    ("train.offset", np.array(10 ** 15), "train.offset"),
    ("train.best_val", np.array(float("inf")), "train.best_val"),
])
def test_lying_scalars_are_refused_by_name(tmp_path, name, value, words):
    src, _ = trained(tmp_path, max_steps=2)
    bad = craft(src, tmp_path / "bad.npz", **{name.replace(".", "__"): value})
    r = invoke("info", bad)
    assert refused(r) and words in r.output, r.output


def test_saved_step_reads_no_more_than_a_scalar(tmp_path):
    src, _ = trained(tmp_path, max_steps=2)
    bomb = _zip_bomb(src, tmp_path / "bomb.npz", "train.step", (1 << 28,))
    t = time.monotonic()
    assert ckpt.saved_step(str(bomb)) is None and ckpt.saved_step(str(src)) == 2
    assert time.monotonic() - t < 0.5  # the 1 GB member was not inflated


# ---- a config: bounded, one line ------------------------------------------------------------


def _alias_bomb(levels=9):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return lines


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = _alias_bomb()
    body = "model:\n  type: &top [" + ", ".join(["*a8"] * 9) + "]\n"
    text = "x_anchors:\n" + "".join(f"  {l}\n" for l in lines) + body
    p = tmp_path / "bomb.yaml"
    p.write_text(text)
    t = time.monotonic()
    r = invoke("train", p)
    assert refused(r) and "10,000 values" in r.output, r.output
    assert time.monotonic() - t < 2


@pytest.mark.parametrize("text, words", [
    ("? [a, b]\n: 1\n", "a key must be a name"),
    ("model:\n  type: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper"),
    ("output:\n  dir: ''\n", "output.dir: must not be empty"),
    ("model:\n  num_layers: 1000000\n  hidden_size: 8\n", "model.num_layers: must be > 0 and at most"),
])
def test_config_files_that_once_gave_tracebacks(tmp_path, text, words):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    r = invoke("train", p)
    assert refused(r) and words in r.output, r.output


@pytest.mark.parametrize("setting, words", [
    ('output.dir="a\\0b"', "NUL"),
    ("model.hidden_size=1e20", "model.hidden_size"),
    ("data.path=''", "data.path: must not be empty"),
])
def test_overrides_that_once_gave_tracebacks(tmp_path, setting, words):
    text = make_text(tmp_path / "t.txt")
    r = invoke("train", text, "--set", setting)
    assert refused(r) and words in r.output, r.output


def test_a_value_in_a_message_is_cut_short():
    with pytest.raises(ConfigError) as e:
        from_dict({"model": {"type": ["x" * 10_000] * 50}})
    assert len(str(e.value)) < 200


def test_a_model_too_big_for_memory_is_refused_before_allocating(tmp_path):
    from charrnn_cli.training.setup import _check_memory, training_bytes

    cfg = from_dict({"model": {"num_layers": 1000, "hidden_size": 1024}})
    assert training_bytes(cfg, 100) > 24 << 30
    with pytest.raises(ConfigError) as e:
        _check_memory(cfg, 100, available=8 << 30)
    assert "needs about" in str(e.value) and "8.0 GB free" in str(e.value)
    text = make_text(tmp_path / "t.txt")
    r = invoke("train", text, "--set", "model.num_layers=1000", "--set", "model.hidden_size=2048",
               "--set", f"output.dir={tmp_path / 'big'}")
    assert refused(r) and "needs about" in r.output, r.output


# ---- data files -----------------------------------------------------------------------------


def test_a_data_path_that_is_a_pipe_is_not_called_empty(tmp_path):
    fifo = tmp_path / "words.txt"
    os.mkfifo(fifo)
    r = invoke("train", fifo, "--set", f"output.dir={tmp_path / 'r'}")
    assert refused(r) and "not a regular file" in r.output, r.output


# ---- signals and processes ------------------------------------------------------------------


def _long_run(tmp_path, prelude="", **training):
    """A run of `charrnn train` in its own process (the program's entry point, as a user runs it);
    `prelude` is Python run first (to slow a save, say)."""
    raw = make_config(tmp_path, **dict(dict(max_steps=1_000_000, checkpoint_every=1_000_000, eval_every=1_000_000,
                                            log_every=1), **training))
    cfg = write_yaml(tmp_path, raw)
    code = f"{prelude}\nimport sys\nfrom charrnn_cli.cli import run\nsys.argv = ['charrnn', 'train', {str(cfg)!r}]\nrun()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc for the helper's pid")
def test_a_stopped_helper_does_not_hold_the_run_and_one_sigterm_saves_it(tmp_path):
    proc = _long_run(tmp_path, unit_split=2, batch_size=8, seq_length=32)
    try:
        wait_for_lines(tmp_path / "run" / "metrics.jsonl", 5, proc)
        helpers = _children(proc.pid)
        assert len(helpers) == 1, helpers
        os.kill(helpers[0], signal.SIGSTOP)
        time.sleep(0.5)  # the run is now waiting for the stopped helper
        os.kill(proc.pid, signal.SIGTERM)  # one SIGTERM, as timeout, systemd and Slurm send
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _children(proc.pid) if proc.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "was stopped; continued it" in err and "saved" in err, err
    step = ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step")
    assert step >= 5
    logged = [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert step - 1 <= logged[-1] <= step  # the step under way finished and was saved (its line comes after)
    with pytest.raises(ProcessLookupError):
        os.kill(helpers[0], 0)  # the helper did not outlive the run
    assert not [f for f in os.listdir(tmp_path / "run") if f.endswith(".tmp")]


def test_sighup_saves_like_sigterm(tmp_path):
    proc = _long_run(tmp_path, unit_split=1)
    wait_for_lines(tmp_path / "run" / "metrics.jsonl", 3, proc)
    os.kill(proc.pid, signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "interrupted by SIGHUP: saved" in err and "Traceback" not in err
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step") >= 3


SLOW_SAVE = """
import time
import charrnn_cli.io.checkpoint as c

_save = c.atomic_save_npz
def slow(path, arrays):
    time.sleep(0.4)
    _save(path, arrays)
c.atomic_save_npz = slow
"""


def test_a_burst_of_ctrl_cs_during_the_save_exits_130_without_a_traceback(tmp_path):
    for attempt in range(3):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        proc = _long_run(folder, prelude=SLOW_SAVE, unit_split=1)
        wait_for_lines(folder / "run" / "metrics.jsonl", 3, proc)
        for _ in range(12):  # the first asks for the save, the rest land in it and after it
            os.kill(proc.pid, signal.SIGINT)
            time.sleep(0.005 if attempt == 0 else 0.05 * attempt)
            if proc.poll() is not None:
                break
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, (attempt, proc.returncode, err)
        assert "Traceback" not in err and "Aborted" not in err, err
        assert "stopped at once" in err or "interrupted by SIGINT" in err, err
        assert not [f for f in os.listdir(folder / "run") if f.endswith(".tmp")]


def test_killed_before_the_first_checkpoint_the_refusal_names_no_missing_file(tmp_path):
    proc = _long_run(tmp_path, unit_split=1)
    wait_for_lines(tmp_path / "run" / "metrics.jsonl", 2, proc)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "run" / "latest.npz").exists()
    r = invoke("train", tmp_path / "cfg.yaml", "--quiet")
    assert refused(r) and "saved no checkpoint" in r.output and "latest.npz" not in r.output, r.output


def test_more_processes_times_threads_than_cores_is_warned(tmp_path):
    from charrnn_cli.parallel.cores import oversubscribed

    def cfg(**t):
        return from_dict({"model": {"hidden_size": 256}, "training": t})

    c = cfg(unit_split=8)
    assert "8 processes x 1 BLAS thread = 8 on 2 usable cores" in oversubscribed(c.training, c.model, 1, {}, 2)
    c = cfg()
    assert "100,000 BLAS threads" in oversubscribed(c.training, c.model, 100_000, {}, 2)
    assert oversubscribed(c.training, c.model, 1, {}, 2) is None  # the default plan: 2 processes x 1 thread
    text = make_text(tmp_path / "t.txt")
    r = invoke("train", text, "--threads", "100000", "--set", "training.max_steps=1",
               "--set", "model.hidden_size=16", "--set", "model.num_layers=1", "--set", "training.unit_split=1",
               "--set", f"output.dir={tmp_path / 'r'}", "--quiet")
    assert r.exit_code == 0 and "100,000 BLAS threads" in r.output, r.output


def test_a_resume_into_another_team_size_says_it_is_not_bit_for_bit(tmp_path):
    raw = make_config(tmp_path, max_steps=4, unit_split=2)
    train(from_dict(raw), quiet=True, echo=lambda m: None)
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).get("train.layout").tolist() == [1, 2]
    raw["training"].update(max_steps=6, unit_split=1)
    said = []
    train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=False, echo=said.append)
    assert any("1 data-parallel process x 2 sharing each step, this run uses 1 data-parallel process x 1" in s
               and "not bit for bit" in s for s in said), said
    raw["training"].update(max_steps=8)
    said = []
    train(from_dict(raw), resume=str(tmp_path / "run" / "latest.npz"), quiet=False, echo=said.append)
    assert not any("not bit for bit" in s for s in said)  # the same layout: exact, no note


# ---- the Python API checks its arguments as the command does ----------------------------------


@pytest.fixture(scope="module")
def api_model(tmp_path_factory):
    import charrnn_cli as charrnn

    tmp = tmp_path_factory.mktemp("api")
    train(from_dict(make_config(tmp, max_steps=2)), quiet=True, echo=lambda m: None)
    return charrnn.load(tmp / "run" / "latest.npz"), tmp / "run" / "latest.npz"


@pytest.mark.parametrize("kwargs, error, words", [
    ({"length": 3.5}, TypeError, "length must be an integer"),
    ({"top_k": 2.5}, TypeError, "top_k must be an integer"),
    ({"prime": 123}, TypeError, "prime must be a string"),
    ({"temperature": float("inf")}, ValueError, "temperature must be a finite number > 0"),
    ({"temperature": "hot"}, TypeError, "temperature must be a number"),
    ({"top_p": float("nan")}, ValueError, "top_p must be in (0, 1]"),
    ({"length": -1}, ValueError, "length must be >= 0"),
    ({"rng_seed": -3}, ValueError, "rng_seed must be an integer >= 0"),
])
def test_api_sample_arguments_are_checked_in_the_commands_words(api_model, kwargs, error, words):
    model, path = api_model
    with pytest.raises(error) as e:
        model.sample(**kwargs)
    assert words in str(e.value)
    with pytest.raises(error):
        list(model.stream(**kwargs))


@pytest.mark.parametrize("args, words", [
    (["--temperature", "inf"], "must be a finite number > 0"),
    (["--top-p", "nan"], "must be in (0, 1]"),
    (["--length", "-1"], "must be >= 0"),
    (["--seed", ""], "must not be empty"),
])
def test_the_command_refuses_the_same_values_with_the_same_words(api_model, args, words):
    _, path = api_model
    r = invoke("sample", path, *args)
    assert r.exit_code == 2 and words in r.output, r.output


def test_api_train_and_score_refuse_wrong_types_up_front(api_model):
    import charrnn_cli as charrnn

    model, _ = api_model
    for call, words in ((lambda: charrnn.train(123), "config must be a YAML path"),
                        (lambda: charrnn.train("x.yaml", overrides=["a=b"]), "overrides must be a dict"),
                        (lambda: charrnn.train(resume=5), "resume must be"),
                        (lambda: model.score(42), "text must be a string")):
        with pytest.raises(TypeError) as e:
            call()
        assert words in str(e.value)
    with pytest.raises(ValueError, match="minutes must be a finite number > 0"):
        charrnn.train("x.yaml", minutes=float("nan"))


# ---- lines mode: say what is wrong with the list ---------------------------------------------


def test_a_list_of_one_item_says_so(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("a single item of forty-two characters, ok\n")
    r = invoke("train", f, "--lines", "--set", f"output.dir={tmp_path / 'r'}")
    assert refused(r) and "the list has 1 item" in r.output and "data.val_fraction=0" in r.output, r.output


def test_items_never_print_an_empty_line_and_say_what_was_dropped(tmp_path):
    from charrnn_cli.tools.sample import new_items
    from charrnn_cli.io.vocab import Vocab

    class EndsAtOnce:  # a model that gives the end marker first, then 'a' forever
        def prepare_step(self, n):
            return None

        def step(self, j, state, ctx):
            logits = np.full((1, 2), -50.0, dtype=np.float32)
            logits[0, 0 if state is None else 1] = 50.0
            return logits, "started"

        def zero_state(self, n):
            return None

    vocab = Vocab.from_text("\na")
    items, dropped, tries = new_items(EndsAtOnce(), vocab, 3, argmax=True, max_length=7)
    assert items == [] and dropped["empty"] == tries == 300
    r_items, _, _ = new_items(type("Long", (EndsAtOnce,), {"step": lambda self, j, s, c: (
        np.array([[-50.0, 50.0]], dtype=np.float32), s)})(), vocab, 2, argmax=True, max_length=7)
    assert r_items == ["aaaaaaa", "aaaaaaa"]


HELPER_HANGS = """
import time
from charrnn_cli.nn.model import CharRNN
_forward, _calls = CharRNN.forward, [0]
def forward(self, idx, targets, state, masks=None, resets=None, team=None, **kw):
    if team is not None and team.rank == 1 and masks is not None:
        _calls[0] += 1
        if _calls[0] == 6:
            time.sleep(3600)  # a helper that hangs without being stopped
    return _forward(self, idx, targets, state, masks, resets, **({} if team is None else {"team": team}))
CharRNN.forward = forward
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc for the helper's pid")
def test_a_hung_helper_is_given_up_on_sigterm_and_the_last_finished_step_saved(tmp_path):
    proc = _long_run(tmp_path, prelude=HELPER_HANGS, unit_split=2, batch_size=8, seq_length=32)
    try:
        wait_for_lines(tmp_path / "run" / "metrics.jsonl", 5, proc)
        time.sleep(0.5)  # the sixth step waits for the helper
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "has not answered" in err and "the step under way was given up" in err and "saved" in err, err
    assert ckpt.load(str(tmp_path / "run" / "latest.npz")).scalar("train.step") == 5  # the sixth was dropped
