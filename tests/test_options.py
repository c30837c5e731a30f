"""Issue 32's training options end to end: model.layer_norm (the LSTM's gates), training.weight_decay
and training.random_cuts, through `charrnn train`, a checkpoint, sample, eval and info; and what the
config refuses."""

import json
import math
import os

import numpy as np
import pytest

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.io.config import ConfigError, from_dict
from charrnn_cli.parallel.cores import plan_threads, team_size
from charrnn_cli.training.loop import train

from conftest import invoke, make_config, params_of, refused, write_yaml


def test_a_layer_normalised_lstm_trains_samples_and_scores_from_the_command_line(tmp_path):
    raw = make_config(tmp_path, max_steps=12, weight_decay=0.1)
    raw["model"]["layer_norm"] = True
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert r.exit_code == 0, r.output
    path = tmp_path / "run" / "latest.npz"
    ck = ckpt.load(str(path))
    assert ck.config.model.layer_norm and ck.config.training.weight_decay == 0.1
    gain = ck.arrays["rnn.ln_weight_l1"]
    assert gain.shape == (4 * 12,) and not np.allclose(gain, 1.0)  # trained from 1
    assert ck.arrays["rnn.ln_bias_l0"].shape == (4 * 12,)
    s = invoke("sample", path, "--seed", "the", "--length", "30", "--rng-seed", "1")
    assert s.exit_code == 0 and len(s.output) >= 30, s.output
    assert s.output == invoke("sample", path, "--seed", "the", "--length", "30", "--rng-seed", "1").output
    e = invoke("eval", path)
    assert e.exit_code == 0 and "nats/char" in e.output, e.output
    i = invoke("info", path)
    assert i.exit_code == 0 and "layer_norm" in i.output, i.output


def test_the_evaluated_loss_is_the_models(tmp_path):
    """eval's figure for the run's split equals the model's forward pass over it, so the
    normalisation is what generation and scoring use too (the step is tested in test_model)."""
    raw = make_config(tmp_path, max_steps=6)
    raw["model"]["layer_norm"] = True
    assert invoke("train", write_yaml(tmp_path, raw), "--quiet").exit_code == 0
    ck = ckpt.load(str(tmp_path / "run" / "best.npz"))
    model = ck.build_model(np.float64)
    text = (tmp_path / "text.txt").read_text()[:200]
    idx = np.array([ck.vocab.index(c) for c in text])[:, None]
    loss = model.forward(idx[:-1], idx[1:], model.zero_state(1))[0]
    other = ck.build_model(np.float64)
    other.layer_norm = False  # the same weights without the normalisation score differently
    other.params = {k: v for k, v in other.params.items() if k[:2] not in ("lw", "lb")}
    assert abs(loss - other.forward(idx[:-1], idx[1:], other.zero_state(1))[0]) > 1e-3


@pytest.mark.parametrize("model,training,words", [
    ({"type": "gru", "layer_norm": True}, {}, "only the LSTM has it, not model.type gru"),
    ({"layer_norm": True}, {"unit_split": 2}, "trains in one process"),
    ({"layer_norm": "yes"}, {}, "model.layer_norm: expected true or false"),
    ({}, {"weight_decay": 1.5}, "training.weight_decay: must be in [0, 1)"),
    ({}, {"weight_decay": -0.1}, "training.weight_decay: must be in [0, 1)"),
    ({"weight_drop": 1.0}, {}, "model.weight_drop: must be in [0, 1)"),
    ({"embedding": -1}, {}, "model.embedding: must be >= 0"),
    ({}, {"random_cuts": 3}, "training.random_cuts: expected true or false"),
])
def test_what_the_config_refuses(tmp_path, model, training, words):
    raw = make_config(tmp_path, **training)
    raw["model"].update(model)
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace(")", r"\)")):
        from_dict(raw)
    r = invoke("train", write_yaml(tmp_path, raw))
    assert refused(r) and words in r.output, r.output


def test_a_layer_normalised_model_takes_one_process_by_itself():
    cfg = from_dict({"model": {"hidden_size": 512, "layer_norm": True}})
    assert team_size(cfg.training, cfg.model, {"OPENBLAS_NUM_THREADS": "1"}, cores=2) == 1
    assert plan_threads(cfg.training, cfg.model, environ={}, cores=2) is None  # every core for its BLAS
    plain = from_dict({"model": {"hidden_size": 512}})
    assert team_size(plain.training, plain.model, {"OPENBLAS_NUM_THREADS": "1"}, cores=2) == 2


def chunk_lengths(run_dir, batch):
    """Each step's chunk length, from metrics.jsonl written every step, grouped by epoch."""
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    rows = [r for r in rows if r.get("train_loss") is not None]
    epochs, seen = {}, 0
    for r in rows:
        epoch = math.ceil(r["epoch"]) - 1  # a step that ends an epoch reports the next one's start
        epochs.setdefault(epoch, []).append((r["chars_seen"] - seen) // batch)
        seen = r["chars_seen"]
    return epochs


def test_random_cuts_move_each_epochs_first_cut_and_nothing_else(tmp_path):
    # 3000 chars, 90% train, 4 streams of 674: 43 chunks of 16 an epoch; 130 steps reach a fourth epoch
    raw = make_config(tmp_path, max_steps=130, log_every=1, eval_every=1000, random_cuts=True)
    straight = train(from_dict(raw), quiet=True)
    epochs = chunk_lengths(straight.out_dir, 4)
    firsts = []
    for e in (0, 1, 2):
        lengths = epochs[e]
        assert sum(lengths) == 674  # every input of the epoch, once
        assert 1 <= lengths[0] <= 16 and set(lengths[1:-1]) == {16} and 1 <= lengths[-1] <= 16
        firsts.append(lengths[0])
    assert len(set(firsts)) > 1  # the cuts fall elsewhere from one epoch to the next
    raw["training"]["random_cuts"] = False
    raw["output"]["dir"] = str(tmp_path / "plain")
    plain = chunk_lengths(train(from_dict(raw), quiet=True).out_dir, 4)
    assert plain[0][0] == plain[1][0] == 16 and len(plain[0]) == 43


def test_random_cuts_resume_exactly(tmp_path):
    """Resumed inside an epoch and across two wraps: the draw is the seed's and the epoch's, not a generator's."""
    raw = make_config(tmp_path, max_steps=100, eval_every=30, checkpoint_every=1000, random_cuts=True)
    a = params_of(os.path.join(train(from_dict(raw), quiet=True).out_dir, "latest.npz"))
    raw["output"]["dir"] = str(tmp_path / "two")
    raw["training"]["max_steps"] = 37
    train(from_dict(raw), quiet=True)
    raw["training"]["max_steps"] = 100
    b = params_of(os.path.join(train(from_dict(raw), resume=str(tmp_path / "two" / "latest.npz"), quiet=True).out_dir,
                               "latest.npz"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_an_input_embedding_trains_samples_scores_and_loads_into_pytorchs_names(tmp_path):
    raw = make_config(tmp_path, max_steps=12)
    raw["model"]["embedding"] = 7
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert r.exit_code == 0, r.output
    path = tmp_path / "run" / "latest.npz"
    ck = ckpt.load(str(path))
    V = len(ck.vocab)
    assert ck.arrays["encoder.weight"].shape == (V, 7) and ck.arrays["rnn.weight_ih_l0"].shape == (4 * 12, 7)
    assert ck.arrays["optim.m.E"].shape == (V, 7)  # Adam's state for it, so a resume is exact
    model = ck.build_model(np.float64)
    text = (tmp_path / "text.txt").read_text()[:100]
    idx = np.array([ck.vocab.index(c) for c in text])[:, None]
    loss = model.forward(idx[:-1], idx[1:], model.zero_state(1))[0]
    ctx, state, total = model.prepare_step(1), model.zero_state(1), 0.0
    for t in range(len(idx) - 1):  # generation's folded table gives the chunk's own loss
        logits, state = model.step(int(idx[t, 0]), state, ctx)
        z = logits[0] - logits[0].max()
        total += np.log(np.exp(z).sum()) - z[idx[t + 1, 0]]
    assert abs(total / (len(idx) - 1) - loss) < 1e-9
    s = invoke("sample", path, "--seed", "the", "--length", "30", "--rng-seed", "1")
    assert s.exit_code == 0 and len(s.output) >= 30, s.output
    e = invoke("eval", path)
    assert e.exit_code == 0 and "nats/char" in e.output, e.output
    i = invoke("info", path)
    assert i.exit_code == 0 and "x 12 hidden, dropout 0.2, an input embedding of 7\n" in i.output, i.output
    arrays = dict(ck.arrays)
    arrays["encoder.weight"] = arrays["encoder.weight"][:, :6]  # a checkpoint that lies about its shapes
    np.savez(tmp_path / "bad.npz", **arrays)
    r = invoke("eval", tmp_path / "bad.npz")
    assert refused(r) and "encoder.weight has shape" in r.output, r.output
