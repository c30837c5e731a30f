"""The fast path against the plain statement of the math (charrnn_cli/nn/reference.py), in float64 to
1e-12: every cell, two layers, dropout, state resets inside the chunk, a carried state, the loss,
every gradient, the initial state's gradient, and one update of every optimizer."""

import numpy as np
import pytest

from charrnn_cli.nn import reference as ref
from charrnn_cli.nn.model import CharRNN
from charrnn_cli.nn.optim import clip_gradients, make_optimizer
from charrnn_cli.io.config import from_dict

TOL = 1e-12


def close(a, b):
    scale = max(np.abs(b).max(), 1e-30)
    return np.abs(np.asarray(a) - np.asarray(b)).max() / scale


def chunk(cell, seed=0, T=7, B=3, V=6, H=5, L=2, dropout=0.3, resets=True, layer_norm=False, embedding=0):
    rng = np.random.default_rng(seed)
    model = CharRNN(cell, V, H, L, dropout, seed=seed, dtype=np.float64, layer_norm=layer_norm, embedding=embedding)
    for k in range(L if layer_norm else 0):  # gains and shifts away from 1 and 0, so both show
        model.params[f"lw{k}"] += rng.normal(0, 0.3, model.params[f"lw{k}"].shape)
        model.params[f"lb{k}"] += rng.normal(0, 0.3, model.params[f"lb{k}"].shape)
    idx, targets = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    state = tuple(rng.normal(0, 0.5, (L, B, H)) for _ in model.cell.state_names)
    masks = model.dropout_masks(T, B, rng)  # (H, T, B) per layer
    reset = rng.random((T, B)) < 0.25 if resets else None
    return model, idx, targets, state, masks, reset


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "lstm+ln", "rnn+emb", "lstm+emb", "gru+emb", "lstm+ln+emb"])
@pytest.mark.parametrize("resets", [False, True])
def test_the_fast_model_computes_what_the_reference_states(cell, resets):
    cell, ln, emb = cell.split("+")[0], "+ln" in cell, 4 if "+emb" in cell else 0  # D = 4 of V = 6
    model, idx, targets, state, masks, reset = chunk(cell, resets=resets, layer_norm=ln, embedding=emb)
    loss, new_state, cache = model.forward(idx, targets, state, masks, reset)
    grads, dstate0 = model.backward(cache)

    params = model.state_dict()  # PyTorch's names and gate order
    rmasks = [m.transpose(1, 2, 0) for m in masks]  # (T, B, H)
    r_loss, r_state, r_cache = ref.model_forward(params, cell, idx, targets, state, rmasks, reset)
    r_grads, r_dstate0 = ref.model_backward(params, cell, r_cache)

    assert abs(loss - r_loss) / r_loss < TOL
    for a, b in zip(new_state, r_state):
        assert close(a, b) < TOL
    as_internal = CharRNN(cell, model.vocab_size, model.hidden_size, model.num_layers, dtype=np.float64, layer_norm=ln,
                          embedding=emb)
    as_internal.load_state_dict(r_grads)  # the reference's gradients in the model's internal layout
    assert sorted(grads) == sorted(model.params)
    for name, g in grads.items():
        assert close(g, as_internal.params[name]) < TOL, name
    for a, b in zip(dstate0, r_dstate0):
        assert close(a, b) < TOL


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_weight_drop_is_what_the_reference_states(cell):
    """model.weight_drop: the chunk runs on W_hh * M and W_hh's gradient is the chain rule's, with
    dropout and resets on as well; the masks come in the model's layout and are converted as
    weights are."""
    model, idx, targets, state, masks, reset = chunk(cell)
    model.weight_drop = 0.4
    wmasks = model.weight_masks(np.random.default_rng(5))
    assert all(set(np.unique(m)) == {0.0, 1 / 0.6} for m in wmasks)
    loss, new_state, cache = model.forward(idx, targets, state, masks, reset, wmasks=wmasks)
    grads, dstate0 = model.backward(cache)

    params = model.state_dict()
    holder = CharRNN(cell, model.vocab_size, model.hidden_size, model.num_layers, dtype=np.float64)
    holder.params.update({f"Wh{k}": m for k, m in enumerate(wmasks)})
    rwmasks = [holder.state_dict()[f"rnn.weight_hh_l{k}"] for k in range(model.num_layers)]  # PyTorch's order
    rmasks = [m.transpose(1, 2, 0) for m in masks]
    r_loss, r_state, r_cache = ref.model_forward(params, cell, idx, targets, state, rmasks, reset, rwmasks)
    r_grads, r_dstate0 = ref.model_backward(params, cell, r_cache)
    assert abs(loss - r_loss) / r_loss < TOL
    assert abs(loss - model.forward(idx, targets, state, masks, reset)[0]) > 1e-3  # the masks change the loss
    holder.load_state_dict(r_grads)
    for name, g in grads.items():
        assert close(g, holder.params[name]) < TOL, name
    for k, m in enumerate(wmasks):
        assert not np.any(grads[f"Wh{k}"][m == 0])  # a dropped weight gets no gradient this step
    for a, b in zip(dstate0, r_dstate0):
        assert close(a, b) < TOL


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad", "sgd"])
def test_every_optimizer_takes_the_step_the_reference_states(name, wd):
    rng = np.random.default_rng(1)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))}
    t_cfg = from_dict({"training": {"optimizer": name, "beta2": 0.99, "momentum": 0.8, "weight_decay": wd}}).training
    opt = make_optimizer(name, {k: v.copy() for k, v in params.items()}, t_cfg)
    fast = {k: v.copy() for k, v in params.items()}
    mine = {k: v.copy() for k, v in params.items()}
    slots = {k: [np.zeros_like(v), np.zeros_like(v)] for k, v in params.items()}
    for t in range(1, 4):  # three updates: the bias corrections and the slots' decay both show
        grads = {k: rng.normal(size=v.shape) * 10 for k, v in params.items()}
        clipped, _ = ref.clip_by_global_norm(grads, 5.0)
        clip_gradients(grads, "norm", 5.0)
        opt.step(fast, grads, 0.01)
        for k in params:
            g, (s1, s2) = clipped[k], slots[k]
            if k == "W":  # a weight matrix: decayed first; a bias never
                mine[k] = ref.weight_decay(mine[k], 0.01, wd)
            if name == "adam":
                mine[k], s1, s2 = ref.adam(mine[k], g, s1, s2, t, 0.01, 0.9, 0.99, 1e-8)
            elif name == "rmsprop":
                mine[k], s1 = ref.rmsprop(mine[k], g, s1, 0.01, 0.99, 1e-8)
            elif name == "adagrad":
                mine[k], s1 = ref.adagrad(mine[k], g, s1, 0.01, 1e-8)
            else:
                mine[k], s1 = ref.sgd(mine[k], g, s1, 0.01, 0.8)
            slots[k] = [s1, s2]
    for k in params:
        assert close(fast[k], mine[k]) < TOL, k


def test_weight_decay_shrinks_the_weights_by_hand_and_never_a_bias():
    # a zero gradient leaves Adam's slots at zero, so its update is 0 / eps = 0: only the decay acts
    params = {"Wh0": np.full((2, 2), 2.0), "bh0": np.full(2, 2.0)}
    opt = make_optimizer("adam", params, from_dict({"training": {"weight_decay": 0.25}}).training)
    opt.step(params, {k: np.zeros_like(v) for k, v in params.items()}, 0.5)
    assert params["Wh0"].tolist() == [[1.75, 1.75], [1.75, 1.75]]  # 2 * (1 - 0.5 * 0.25)
    assert params["bh0"].tolist() == [2.0, 2.0]
