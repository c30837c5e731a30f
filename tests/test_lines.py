"""Lines mode: a file of items, each read from a zero state with the newline as its start and end
marker; resets inside a chunk in the hand-written forward and backward; sampling items."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.cli import main
from charrnn_cli.io.config import from_dict
from charrnn_cli.io.cache import prepare
from charrnn_cli.io.data import as_lines
from charrnn_cli.nn.gradcheck import check_model
from charrnn_cli.nn.model import CharRNN
from charrnn_cli.training.loop import train

from conftest import make_config, write_yaml, params_of, NAMES, names_config, invoke


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("mt", ["rnn", "lstm", "gru"])
def test_a_chunk_of_items_equals_the_items_one_by_one(mt):
    """Loss and gradients of a chunk holding several items, with resets, equal those of the items
    run one by one from zero states (float64)."""
    rng = np.random.default_rng(1)
    V, nl = 7, 0
    model = CharRNN(mt, V, 5, 2, seed=3, dtype=np.float64)
    items = [rng.integers(1, V, size=n) for n in (3, 1, 4, 2)]
    seq = np.concatenate([np.r_[nl, it] for it in items] + [[nl]])  # \n a b c \n d \n ...
    x, y = seq[:-1, None], seq[1:, None]
    resets = x == nl
    state = tuple(rng.normal(size=s.shape) for s in model.zero_state(1))  # a carried state: reset at once
    loss, _, cache = model.forward(x, y, state, resets=resets)
    grads, _ = model.backward(cache)
    total, g_sum = 0.0, {k: np.zeros_like(v) for k, v in grads.items()}
    for it in items:
        s = np.r_[nl, it, nl]
        lo, _, c = model.forward(s[:-1, None], s[1:, None], model.zero_state(1))
        g, _ = model.backward(c)
        n = len(s) - 1
        total += lo * n
        for k in g:
            g_sum[k] += g[k] * n
    assert loss == pytest.approx(total / len(y), rel=1e-12)
    for k in grads:
        np.testing.assert_allclose(grads[k], g_sum[k] / len(y), rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("mt", ["rnn", "lstm", "gru"])
def test_gradients_with_resets_match_finite_differences(mt):
    for row in check_model(mt, resets=True):
        assert row.max_rel_error < 1e-6, row


def test_gradcheck_command_covers_resets():
    r = invoke("gradcheck", "--model", "gru")
    assert r.exit_code == 0 and "gru+resets" in r.output and "FAIL" not in r.output


def test_items_are_read_with_markers():
    chunks = [np.array([ord(c) for c in "ab\r\n\n\ncd"], np.uint32), np.array([10, 101], np.uint32)]
    assert "".join(chr(c) for c in np.concatenate(list(as_lines(chunks)))) == "\nab\ncd\ne\n"


def test_validation_holds_whole_items_and_reports_nats_per_item(tmp_path):
    raw = names_config(tmp_path)
    corpus = prepare(raw["data"]["path"], str(tmp_path / "cache"), mode="lines")
    tr, val = corpus.split(0.2, lines=True)
    nl = corpus.vocab.index("\n")
    t, v = np.asarray(tr), np.asarray(val)
    assert t[0] == nl and t[-1] == nl and v[0] == nl and v[-1] == nl  # whole items on both sides
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert r.exit_code == 0 and "nats/item" in r.output, r.output
    rec = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl") if '"val_loss": null' not in x]
    assert rec and all(x["val_nats_per_item"] > x["val_loss"] for x in rec)


def test_exact_resume_in_lines_mode(tmp_path):
    raw = names_config(tmp_path, max_steps=30, checkpoint_every=100)
    train(from_dict(raw), quiet=True)
    a = params_of(str(tmp_path / "run" / "latest.npz"))
    raw["output"]["dir"] = str(tmp_path / "split")
    raw["training"]["max_steps"] = 12
    train(from_dict(raw), quiet=True)
    raw["training"]["max_steps"] = 30
    train(from_dict(raw), resume=str(tmp_path / "split" / "latest.npz"), quiet=True)
    b = params_of(str(tmp_path / "split" / "latest.npz"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_sample_items_stop_at_the_end_marker_and_novel_drops_copies(tmp_path):
    raw = names_config(tmp_path, max_steps=150, learning_rate=0.03)
    assert invoke("train", write_yaml(tmp_path, raw), "--quiet").exit_code == 0
    best = tmp_path / "run" / "best.npz"
    r = invoke("sample", best, "--items", 30, "--rng-seed", 1, "--length", 12)
    items = r.output.split("\n")[:-1]
    assert r.exit_code == 0 and len(items) == 30 and all(0 <= len(i) <= 12 and "\n" not in i for i in items)
    assert sum(i in NAMES for i in items) >= 5  # it learned the list: many copies
    again = invoke("sample", best, "--items", 30, "--rng-seed", 1, "--length", 12).output
    assert again == r.output  # the seed fixes the items
    r = CliRunner().invoke(main, ["sample", str(best), "--items", "20", "--novel", "--rng-seed", "1"])
    new = [line for line in r.stdout.split("\n") if line]
    assert r.exit_code == 0 and new and not set(new) & set(NAMES)
    assert "as copies of training items" in r.stderr


def test_items_need_a_lines_model(tmp_path):

    raw = make_config(tmp_path, max_steps=2)
    train(from_dict(raw), quiet=True)
    r = invoke("sample", tmp_path / "run" / "latest.npz", "--items", 3)
    assert r.exit_code == 1 and "--items needs a model trained on items" in r.output


def test_stream_mode_has_no_resets(tmp_path, monkeypatch):
    seen = []
    real = CharRNN.forward

    def forward(self, idx, targets, state, masks=None, resets=None, **kw):
        seen.append(resets)
        return real(self, idx, targets, state, masks, resets, **kw)

    monkeypatch.setattr(CharRNN, "forward", forward)

    train(from_dict(make_config(tmp_path, max_steps=3)), quiet=True)
    assert seen and all(r is None for r in seen)  # the stream path is the one it always was


def test_the_bundlednames_config_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    r = invoke("train", "configs/names.yaml", "--quiet", "--set", "training.max_steps=20",
               "--set", "training.max_minutes=null", "--set", f"output.dir={tmp_path / 'names'}")
    assert r.exit_code == 0 and "nats/item" in r.output, r.output
    assert ckpt.load(str(tmp_path / "names" / "latest.npz")).config.data.mode == "lines"
