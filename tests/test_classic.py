"""The classic setups: init options, value clipping, the bundled configs, training curves."""

import glob
import math
import os

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn_cli.cli import main
from charrnn_cli.io.config import load_config
from charrnn_cli.nn.model import CharRNN
from charrnn_cli.nn.optim import clip_gradients, learning_rate


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIC = ["min-char-rnn", "numpy-lstm", "keras-vanilla-lstm", "rnn", "gru", "shakespeare"]


def test_value_clipping_clamps_each_element():
    g = {"a": np.array([-7.0, -0.5, 0.0, 3.0, 9.0]), "b": np.array([[6.0, -6.0]])}
    norm = clip_gradients(g, "value", 5.0)
    assert g["a"].tolist() == [-5.0, -0.5, 0.0, 3.0, 5.0] and g["b"].tolist() == [[5.0, -5.0]]
    assert norm == pytest.approx(math.sqrt(49 + 0.25 + 9 + 81 + 72))  # the norm before clipping
    g = {"a": np.array([30.0, 40.0])}
    clip_gradients(g, "norm", 5.0)
    np.testing.assert_allclose(g["a"], [3.0, 4.0])
    g = {"a": np.array([30.0, 40.0])}
    clip_gradients(g, "value", 0.0)  # 0 turns clipping off
    assert g["a"].tolist() == [30.0, 40.0]


def test_normal_init_statistics():
    m = CharRNN("rnn", 50, 200, init="normal", init_scale=0.01, seed=0)
    w = m.params["Wh0"]
    assert abs(float(w.mean())) < 5e-4 and float(w.std()) == pytest.approx(0.01, rel=0.02)
    for b in ("bx0", "bh0", "by"):
        assert not m.params[b].any()  # zero biases


def test_xavier_init_statistics_and_forget_bias():
    H, V = 100, 40
    m = CharRNN("lstm", V, H, init="xavier", forget_bias=1.0, seed=0)
    sd = m.state_dict()
    w = sd["rnn.weight_hh_l0"]  # (4H, H): each gate block (H, H) has fan_in = fan_out = H
    limit = math.sqrt(6 / (H + H))
    assert np.abs(w).max() <= limit and float(w.std()) == pytest.approx(limit / math.sqrt(3), rel=0.02)
    wi = sd["rnn.weight_ih_l0"]
    assert np.abs(wi).max() <= math.sqrt(6 / (V + H))
    b = sd["rnn.bias_ih_l0"]  # PyTorch order i, f, g, o
    assert not b[:H].any() and (b[H : 2 * H] == 1.0).all() and not b[2 * H :].any()
    assert not sd["rnn.bias_hh_l0"].any()


def test_pytorch_init_statistics():
    H = 64
    m = CharRNN("gru", 30, H, seed=0)
    bound = 1 / math.sqrt(H)
    for v in m.params.values():
        assert np.abs(v).max() <= bound
    w = m.params["Wh0"]
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.03)


def test_cosine_schedule_and_warmup():
    from charrnn_cli.io.config import from_dict

    t = from_dict({"training": {"lr_schedule": "cosine", "max_steps": 100, "learning_rate": 1.0,
                                "lr_min_fraction": 0.1, "warmup_steps": 10}}).training
    assert learning_rate(t, 5) == pytest.approx(0.5)
    assert learning_rate(t, 10) == pytest.approx(1.0)
    assert learning_rate(t, 55) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate(t, 100) == pytest.approx(0.1)
    t = from_dict({"training": {"lr_schedule": "cosine", "max_minutes": 10, "learning_rate": 1.0,
                                "lr_min_fraction": 0.0}}).training
    # the default warm-up (200 steps) comes first; then the cosine follows the clock
    assert learning_rate(t, 100, 0.01) == pytest.approx(0.5)
    assert learning_rate(t, 201, 0.5) == pytest.approx(0.5) and learning_rate(t, 201, 1.0) == pytest.approx(0.0)
    t = from_dict({"training": {"lr_schedule": "step", "lr_decay": 0.5, "lr_decay_every": 10,
                                "learning_rate": 1.0, "warmup_steps": 0}}).training
    assert [learning_rate(t, s) for s in (1, 10, 11, 21)] == [1.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize("name", CLASSIC)
def test_classic_configs_validate_and_train_a_few_steps(name, tmp_path, monkeypatch):
    path = os.path.join(ROOT, "configs", f"{name}.yaml")
    cfg = load_config(path)
    assert cfg.data.path == "data/tinyshakespeare.txt"
    monkeypatch.chdir(ROOT)
    r = CliRunner().invoke(main, ["train", path, "--quiet", "--set", "training.max_steps=3",
                                  "--set", "training.max_minutes=null", "--set", "training.eval_max_chars=2000",
                                  "--set", "model.hidden_size=16", "--set", f"output.dir={tmp_path}/run",
                                  "--set", f"data.cache_dir={tmp_path}/cache"])
    assert r.exit_code == 0, r.output
    assert "stopped at max_steps: step 3" in r.output


def test_every_config_is_covered():
    names = {os.path.basename(p)[:-5] for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml"))}
    assert set(CLASSIC) | {"tiny", "names"} == names  # names: lines mode, tested in test_lines.py


def test_min_char_rnn_config_is_faithful():
    c = load_config(os.path.join(ROOT, "configs", "min-char-rnn.yaml"))
    assert (c.model.type, c.model.hidden_size, c.model.init, c.model.init_scale) == ("rnn", 100, "normal", 0.01)
    t = c.training
    assert (t.batch_size, t.seq_length, t.optimizer, t.learning_rate, t.clip_mode) == (1, 25, "adagrad", 0.1, "value")
    assert t.grad_clip * t.seq_length == pytest.approx(5.0)


def _fake_run(folder, offset=0.0):
    import json

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as fh:
        for s in range(1, 11):
            fh.write(json.dumps({"step": s * 10, "chars_seen": s * 1000, "elapsed_s": s * 6.0,
                                 "train_loss": 3.0 - 0.1 * s + offset,
                                 "val_loss": (3.1 - 0.1 * s + offset) if s % 2 == 0 else None}) + "\n")


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    _fake_run(tmp_path / "a")
    _fake_run(tmp_path / "b", offset=0.2)
    out = tmp_path / "curves.png"
    r = CliRunner().invoke(main, ["plot", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_bad_run_folder(tmp_path):
    pytest.importorskip("matplotlib")
    r = CliRunner().invoke(main, ["plot", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "no metrics.jsonl" in r.output


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    _fake_run(tmp_path / "a")
    r = CliRunner().invoke(main, ["plot", str(tmp_path / "a")])
    assert r.exit_code == 2 and 'pip install "charrnn[plot]"' in r.output
