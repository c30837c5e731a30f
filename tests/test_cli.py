"""sample, eval, info and gradcheck through the CLI; bad checkpoints give one clear line."""

import json
import math
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.cli import main, sparkline
from charrnn_cli.io.config import from_dict
from charrnn_cli.nn.model import CharRNN
from charrnn_cli.tools.sample import _choose
from charrnn_cli.io.vocab import Vocab


TEXT = "hello world\nthe quick brown fox\n"


def make_checkpoint(path, mt="lstm", text=TEXT, hidden=8, layers=1, seed=0, history=None):
    vocab = Vocab.from_text(text)
    cfg = from_dict({"model": {"type": mt, "hidden_size": hidden, "num_layers": layers}})
    model = CharRNN(mt, len(vocab), hidden, layers, seed=seed)
    arrays = ckpt.build_arrays(model, vocab, cfg, progress={"step": 12, "epoch": 1, "best_val": 2.5},
                               history=history)
    ckpt.atomic_save_npz(str(path), arrays)
    return str(path), model, vocab


@pytest.fixture
def ck(tmp_path):
    return make_checkpoint(tmp_path / "m.npz")[0]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_and_version():
    assert run("-h").exit_code == 0 and "gradcheck" in run("--help").output
    assert run("--version").output.startswith("charrnn, version")
    for cmd in ["train", "sample", "eval", "info", "gradcheck"]:
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "Example" in r.output


def test_sample_is_deterministic_with_a_seed_and_varies_without(ck):
    a = run("sample", ck, "--seed", "he", "--length", "200", "--rng-seed", "5")
    b = run("sample", ck, "--seed", "he", "--length", "200", "--rng-seed", "5")
    c = run("sample", ck, "--seed", "he", "--length", "200")
    d = run("sample", ck, "--seed", "he", "--length", "200")
    assert a.exit_code == 0 and a.output == b.output
    assert a.output.startswith("he") and len(a.output) == 2 + 200 + 1
    assert c.output != d.output


def test_argmax_ignores_the_rng_and_equals_top_k_1(ck):
    a = run("sample", ck, "--length", "50", "--argmax", "--rng-seed", "1").output
    b = run("sample", ck, "--length", "50", "--argmax", "--rng-seed", "2").output
    c = run("sample", ck, "--length", "50", "--top-k", "1", "--rng-seed", "3").output
    assert a == b == c
    assert a.startswith("\n")  # no --seed: a newline when the vocabulary has one


def test_gumbel_rows_in_blocks_are_the_single_draws():
    from charrnn_cli.tools.sample import _gumbel, _gumbel_rows

    rows = list(_gumbel_rows(np.random.default_rng(3), 5, 10, rows=4))  # blocks of 4, 4, 2
    np.testing.assert_array_equal(np.array(rows), _gumbel(np.random.default_rng(3), (10, 5)))
    assert _gumbel(np.random.default_rng(3), (2, 5), np.float32).dtype == np.float32
    g = _gumbel(np.random.default_rng(0), 200_000)
    assert abs(g.mean() - np.euler_gamma) < 0.01 and abs(g.var() - np.pi**2 / 6) < 0.03  # the Gumbel moments


def test_choose_one_matches_choose():
    from charrnn_cli.tools.sample import _choose_one, _gumbel

    rng = np.random.default_rng(1)
    for _ in range(200):
        z = rng.normal(size=(1, 9)).astype(np.float32) * 3
        for temp, k in ((1.0, None), (0.7, 3)):
            g = _gumbel(rng, (1, 9))
            expected = _choose(z, temp, k, False, g)[0]
            assert _choose_one(z[0], temp, k, False, g[0].copy()) == expected
    assert _choose_one(np.array([0.0, 5.0, 1.0]), 1.0, None, True, None) == 1


def test_choose_temperature_top_k_and_argmax():
    from charrnn_cli.tools.sample import _gumbel

    rng = np.random.default_rng(0)
    logits = np.tile(np.log(np.array([0.5, 0.3, 0.15, 0.05])), (20000, 1))
    freq = lambda t, k=None: np.bincount(_choose(logits, t, k, False, _gumbel(rng, logits.shape)), minlength=4) / 20000
    f1 = freq(1.0)
    np.testing.assert_allclose(f1, [0.5, 0.3, 0.15, 0.05], atol=0.015)  # T=1 samples the model's probabilities
    cold, hot = freq(0.5), freq(2.0)
    np.testing.assert_allclose(cold, np.array([0.5, 0.3, 0.15, 0.05]) ** 2 / 0.365, atol=0.015)  # p^(1/T), renormalised
    assert cold[0] > f1[0] > hot[0] and cold[3] < f1[3] < hot[3]  # lower temperature: more conservative
    top2 = freq(1.0, 2)
    assert top2[2] == top2[3] == 0 and top2[0] == pytest.approx(0.5 / 0.8, abs=0.015)
    assert (_choose(logits[:3], 1.0, None, True, None) == 0).all()


def test_unknown_seed_characters(ck):
    r = run("sample", ck, "--seed", "hé!", "--length", "5")
    assert r.exit_code == 1 and "'é' '!'" in r.output and "--skip-unknown" in r.output
    r = CliRunner().invoke(main, ["sample", ck, "--seed", "hé!", "--length", "5", "--skip-unknown"])
    assert r.exit_code == 0 and "warning: dropped" in r.stderr and r.stdout.startswith("h")


def test_num_samples(ck):
    r = run("sample", ck, "--seed", "the", "--length", "20", "--num-samples", "3", "--rng-seed", "1")
    assert r.exit_code == 0
    parts = r.output.split("--- sample ")
    assert len(parts) == 4 and parts[1].startswith("1 of 3 ---\nthe")
    bodies = [p.split("---\n", 1)[1] for p in parts[1:]]
    assert len(set(bodies)) == 3 and all(len(b) == 3 + 20 + 1 for b in bodies)


@pytest.mark.parametrize("args", [["--temperature", "0"], ["--temperature", "-1"], ["--length", "-5"],
                                  ["--top-k", "0"], ["--num-samples", "0"]])
def test_sample_bad_options_exit_2(ck, args):
    r = run("sample", ck, *args)
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_eval_matches_a_hand_computed_case(tmp_path):
    # a model whose prediction ignores its input: all weights zero, decoder bias b -> p = softmax(b)
    path, model, vocab = make_checkpoint(tmp_path / "z.npz", text="abc")
    sd = {k: np.zeros_like(v) for k, v in model.state_dict().items()}
    sd["decoder.bias"] = np.array([1.0, 0.0, -1.0], dtype=np.float32)
    cfg = from_dict({"model": {"type": "lstm", "hidden_size": 8, "num_layers": 1}})
    model.load_state_dict(sd)
    ckpt.atomic_save_npz(path, ckpt.build_arrays(model, vocab, cfg))
    f = tmp_path / "t.txt"
    f.write_text("abcabx", encoding="utf-8")  # x is not in the vocabulary: left out
    z = math.log(math.e + 1 + math.exp(-1))
    nll = {"a": z - 1, "b": z, "c": z + 1}
    expected = sum(nll[c] for c in "bcab") / 4  # every known character after the first
    r = run("eval", path, f, "--json")
    d = json.loads(r.output)
    assert d["chars"] == 4 and d["unknown_chars"] == 1 and d["unknown"] == {"x": 1}
    assert d["nats_per_char"] == pytest.approx(expected, abs=1e-5)
    assert d["bits_per_char"] == pytest.approx(expected / math.log(2), abs=1e-5)
    r = run("eval", path, f)
    assert "nats/char" in r.output and "left out 1 characters" in r.output


def test_eval_carries_state_across_chunks(tmp_path, monkeypatch):
    from charrnn_cli.io import data as data_mod
    from charrnn_cli.training.evaluate import score_file

    path, model, vocab = make_checkpoint(tmp_path / "m.npz", mt="gru", layers=2)
    text = (TEXT * 7)[:150]
    f = tmp_path / "t.txt"
    f.write_text(text)
    monkeypatch.setattr(data_mod, "CHUNK_BYTES", 17)
    nats, count, _ = score_file(model, vocab, str(f), seq_length=9)
    idx = vocab.encode(text)
    loss, _, _ = model.forward(idx[:-1, None], idx[1:, None], model.zero_state(1))
    assert count == len(text) - 1 and nats == pytest.approx(loss, abs=1e-5)


def test_info(tmp_path):
    hist = {"val": [[100, 0, 0, 3.0], [200, 0, 0, 2.5], [300, 0, 0, 2.2]], "train": []}
    path = make_checkpoint(tmp_path / "m.npz", mt="gru", layers=2, history=hist)[0]
    r = run("info", path)
    assert r.exit_code == 0
    for s in ["gru, 2 layer(s) x 8 hidden", "format version 2", "step 12", "epoch 1", "best 2.5000 nats/char",
              "latest 2.2000", "training.learning_rate", "val history"]:
        assert s in r.output, s
    d = json.loads(run("info", path, "--json").output)
    assert d["model"]["type"] == "gru" and d["vocab_size"] == len(set(TEXT)) and d["parameters"] > 0
    assert d["best_val_loss"] == 2.5 and d["latest_val_loss"] == 2.2 and d["format_version"] == 2


def test_sparkline():
    assert sparkline([3, 2, 1]) == "█▅▁"
    assert len(sparkline(range(100), width=40)) == 40


def _bad_checkpoints(tmp_path):
    good = make_checkpoint(tmp_path / "good.npz")[0]
    raw = open(good, "rb").read()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.npz").write_text("hello")
    np.savez(tmp_path / "noversion.npz", x=np.arange(3))
    with np.load(good) as z:
        arrays = dict(z)
    np.savez(tmp_path / "v99.npz", **dict(arrays, format_version=np.array(99)))
    np.savez(tmp_path / "noweights.npz", **{k: v for k, v in arrays.items() if k != "decoder.weight"})
    np.savez(tmp_path / "noconfig.npz", **{k: v for k, v in arrays.items() if k != "config_json"})
    with zipfile.ZipFile(tmp_path / "corrupt.npz", "w") as zf:
        zf.writestr("format_version.npy", b"\x93NUMPY garbage")
    (tmp_path / "dir.npz").mkdir()
    return {
        "missing.npz": "checkpoint not found",
        "truncated.npz": "not a complete .npz",
        "text.npz": "not an .npz file",
        "noversion.npz": "no format_version",
        "v99.npz": "format version 99",
        "noweights.npz": "missing parameter arrays: decoder.weight",
        "noconfig.npz": "missing arrays: config_json",
        "corrupt.npz": "corrupt",
        "dir.npz": "directory",
    }


@pytest.mark.parametrize("command", ["sample", "eval", "info"])
def test_bad_checkpoints_give_one_line(tmp_path, command):
    f = tmp_path / "t.txt"
    f.write_text(TEXT)
    for name, message in _bad_checkpoints(tmp_path).items():
        args = [command, str(tmp_path / name)] + ([str(f)] if command == "eval" else [])
        r = CliRunner().invoke(main, args)
        assert r.exit_code in (1, 2), (name, r.output)
        assert message in r.output, (name, r.output)
        assert "Traceback" not in r.output and r.output.strip().count("\n") == 0, (name, r.output)


def test_eval_unreadable_file(ck, tmp_path):
    r = run("eval", ck, tmp_path / "none.txt")
    assert r.exit_code == 1 and "file not found" in r.output
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff")
    r = run("eval", ck, bad)
    assert r.exit_code == 1 and "not valid UTF-8: bad byte at offset 6" in r.output


def test_gradcheck_command():
    r = run("gradcheck", "--model", "gru", "--layers", "1", "--hidden-size", "4")
    assert r.exit_code == 0 and "rnn.weight_hh_l0" in r.output and "gru+wdrop+resets" in r.output
    assert "gru+emb+resets" in r.output and "encoder.weight" in r.output
    assert "all 44 tensors within" in r.output  # 7, 7 with weight drop, 8 with an embedding; then with resets
    r = run("gradcheck", "--model", "rnn", "--tol", "1e-30")
    assert r.exit_code == 1 and "FAIL" in r.output


def test_gradcheck_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {type: gru, hidden_size: 20, num_layers: 2, dropout: 0.1}\n")
    r = run("gradcheck", "--config", cfg)
    assert r.exit_code == 0, r.output
    assert "gru" in r.output and "rnn.weight_hh_l1" in r.output and "60x20" in r.output
