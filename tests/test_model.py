"""The cells and the model: gradients, hand-worked steps, shapes, state carrying, dropout, seeds."""

import math

import numpy as np
import pytest

from charrnn_cli.nn.buffers import Workspace, aligned_zeros
from charrnn_cli.nn.gradcheck import check_model
from charrnn_cli.nn import params as model_mod
from charrnn_cli.nn.model import CharRNN, softmax_cross_entropy
from charrnn_cli.nn.params import lookup_columns, scatter_columns

TYPES = ["rnn", "lstm", "gru"]
WITH_LN = TYPES + ["lstm+ln"]  # "+ln": model.layer_norm, its gains and shifts moved off 1 and 0


def make(mt, *args, **kw):
    """CharRNN(mt, ...), with its gates layer-normalised for "lstm+ln"."""
    m = CharRNN(mt.split("+")[0], *args, layer_norm=mt.endswith("+ln"), **kw)
    rng = np.random.default_rng(11)
    for k in [k for k in m.params if k[:2] in ("lw", "lb")]:
        m.params[k] += rng.normal(0, 0.3, m.params[k].shape).astype(m.dtype)
    return m


@pytest.mark.parametrize("mt", WITH_LN)
@pytest.mark.parametrize("layers,dropout", [(1, 0.0), (2, 0.3), (3, 0.0)])
def test_gradients_match_finite_differences(mt, layers, dropout):
    ln = mt.endswith("+ln")
    rows = check_model(mt.split("+")[0], num_layers=layers, hidden_size=5, vocab_size=4, seq_length=4, batch_size=2,
                       dropout=dropout, seed=3, layer_norm=ln)
    names = {r.tensor for r in rows}
    assert "decoder.weight" in names and f"rnn.weight_hh_l{layers - 1}" in names and "h_0" in names
    assert (f"rnn.ln_weight_l{layers - 1}" in names) == (f"rnn.ln_bias_l{layers - 1}" in names) == ln
    for r in rows:
        assert r.checked > 0
        assert r.max_rel_error < 1e-6, r


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    # a deliberately broken backward must be caught: the check can fail
    from charrnn_cli.nn import cells

    orig = cells.LSTMCell.backward

    def broken(self, dhs, dstate, cache):
        dxw, ds, dWh, dbh = orig(self, dhs, dstate, cache)
        return dxw, ds, dWh * 1.01, dbh

    monkeypatch.setattr(cells.LSTMCell, "backward", broken)
    rows = check_model("lstm", num_layers=1)
    bad = [r for r in rows if r.max_rel_error > 1e-6]
    assert [r.tensor for r in bad] == ["rnn.weight_hh_l0"]


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _set_scalar_model(model, wih, whh, bih, bhh, wdec, bdec):
    """Load a 1-unit model (V=2) from plain lists in PyTorch layout."""
    sd = {
        "rnn.weight_ih_l0": np.array(wih, dtype=float).reshape(-1, 2),
        "rnn.weight_hh_l0": np.array(whh, dtype=float).reshape(-1, 1),
        "rnn.bias_ih_l0": np.array(bih, dtype=float),
        "rnn.bias_hh_l0": np.array(bhh, dtype=float),
        "decoder.weight": np.array(wdec, dtype=float).reshape(2, 1),
        "decoder.bias": np.array(bdec, dtype=float),
    }
    model.load_state_dict(sd)


def _loss_by_hand(h, wdec, bdec, target):
    z = [wdec[0] * h + bdec[0], wdec[1] * h + bdec[1]]
    return -(z[target] - math.log(math.exp(z[0]) + math.exp(z[1])))


def test_one_step_rnn_by_hand():
    m = CharRNN("rnn", 2, 1, dtype=np.float64)
    _set_scalar_model(m, [0.5, -0.3], [0.8], [0.1], [-0.2], [1.5, -0.5], [0.0, 0.2])
    h0 = 0.4
    # input character 1 selects column 1 of W_ih: h = tanh(-0.3 + 0.8*0.4 + 0.1 - 0.2)
    h = math.tanh(-0.3 + 0.8 * h0 + 0.1 - 0.2)
    loss, (hT,), _ = m.forward(np.array([[1]]), np.array([[0]]), (np.full((1, 1, 1), h0),))
    assert hT[0, 0, 0] == pytest.approx(h, abs=1e-12)
    assert loss == pytest.approx(_loss_by_hand(h, [1.5, -0.5], [0.0, 0.2], 0), abs=1e-12)


def test_one_step_lstm_by_hand():
    m = CharRNN("lstm", 2, 1, dtype=np.float64)
    # PyTorch gate order i, f, g, o
    wih = [[0.1, 0.2], [0.3, -0.1], [-0.4, 0.5], [0.2, 0.2]]
    whh = [0.5, -0.6, 0.7, 0.1]
    bih = [0.05, 0.0, -0.05, 0.1]
    bhh = [0.0, 0.2, 0.0, -0.1]
    _set_scalar_model(m, wih, whh, bih, bhh, [1.0, -1.0], [0.1, -0.1])
    h0, c0, x = -0.3, 0.6, 0
    pre = [wih[j][x] + whh[j] * h0 + bih[j] + bhh[j] for j in range(4)]
    i, f, g, o = _sig(pre[0]), _sig(pre[1]), math.tanh(pre[2]), _sig(pre[3])
    c = f * c0 + i * g
    h = o * math.tanh(c)
    state = (np.full((1, 1, 1), h0), np.full((1, 1, 1), c0))
    loss, (hT, cT), _ = m.forward(np.array([[x]]), np.array([[1]]), state)
    assert cT[0, 0, 0] == pytest.approx(c, abs=1e-12)
    assert hT[0, 0, 0] == pytest.approx(h, abs=1e-12)
    assert loss == pytest.approx(_loss_by_hand(h, [1.0, -1.0], [0.1, -0.1], 1), abs=1e-12)


def test_one_step_gru_by_hand():
    m = CharRNN("gru", 2, 1, dtype=np.float64)
    # PyTorch gate order r, z, n
    wih = [[0.3, -0.2], [0.1, 0.4], [-0.5, 0.6]]
    whh = [0.2, -0.3, 0.9]
    bih = [0.1, -0.1, 0.05]
    bhh = [-0.2, 0.3, 0.15]
    _set_scalar_model(m, wih, whh, bih, bhh, [0.7, 0.2], [0.0, 0.0])
    h0, x = 0.5, 1
    r = _sig(wih[0][x] + bih[0] + whh[0] * h0 + bhh[0])
    z = _sig(wih[1][x] + bih[1] + whh[1] * h0 + bhh[1])
    n = math.tanh(wih[2][x] + bih[2] + r * (whh[2] * h0 + bhh[2]))
    h = (1 - z) * n + z * h0
    loss, (hT,), _ = m.forward(np.array([[x]]), np.array([[1]]), (np.full((1, 1, 1), h0),))
    assert hT[0, 0, 0] == pytest.approx(h, abs=1e-12)
    assert loss == pytest.approx(_loss_by_hand(h, [0.7, 0.2], [0.0, 0.0], 1), abs=1e-12)


@pytest.mark.parametrize("mt", TYPES)
def test_shapes(mt):
    V, H, L, T, B = 7, 6, 2, 5, 3
    m = CharRNN(mt, V, H, L)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[mt]
    sd = m.state_dict()
    assert sd["rnn.weight_ih_l0"].shape == (G * H, V)
    assert sd["rnn.weight_ih_l1"].shape == (G * H, H)
    assert sd["rnn.weight_hh_l1"].shape == (G * H, H)
    assert sd["rnn.bias_ih_l0"].shape == sd["rnn.bias_hh_l0"].shape == (G * H,)
    assert sd["decoder.weight"].shape == (V, H) and sd["decoder.bias"].shape == (V,)
    state = m.zero_state(B)
    assert len(state) == (2 if mt == "lstm" else 1) and state[0].shape == (L, B, H)
    idx = np.zeros((T, B), dtype=np.int64)
    loss, new_state, cache = m.forward(idx, idx, state)
    assert cache["logits"].shape == (T * B, V) and cache["logits"].dtype == np.float32
    assert [s.shape for s in new_state] == [s.shape for s in state]
    grads, dstate = m.backward(cache)
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in m.params.items()}
    assert all(g.dtype == np.float32 for g in grads.values())


@pytest.mark.parametrize("mt", WITH_LN)
def test_carried_state_equals_joined_chunk(mt):
    V, T, B = 6, 8, 3
    m = make(mt, V, 5, 2, seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, V, size=(2 * T, B))
    tgt = rng.integers(0, V, size=(2 * T, B))
    s0 = m.zero_state(B)
    l1, s1, c1 = m.forward(idx[:T], tgt[:T], s0)
    logits1 = c1["logits"].copy()
    l2, s2, c2 = m.forward(idx[T:], tgt[T:], s1)
    logits2 = c2["logits"].copy()
    lj, sj, cj = m.forward(idx, tgt, s0)
    np.testing.assert_allclose(np.concatenate([logits1, logits2]), cj["logits"], rtol=0, atol=1e-12)
    for a, b in zip(s2, sj):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert (l1 + l2) / 2 == pytest.approx(lj, abs=1e-12)


@pytest.mark.parametrize("mt", TYPES)
def test_dropout_only_when_masks_are_given(mt):
    V, T, B = 5, 4, 2
    m = CharRNN(mt, V, 6, 2, dropout=0.5, seed=2, dtype=np.float64)
    idx = np.random.default_rng(1).integers(0, V, size=(T, B))
    s = m.zero_state(B)
    a = m.forward(idx, idx, s)[2]["logits"].copy()
    b = m.forward(idx, idx, s)[2]["logits"].copy()
    np.testing.assert_array_equal(a, b)  # evaluation: deterministic, no dropout
    masks = m.dropout_masks(T, B, np.random.default_rng(5))
    assert len(masks) == 2 and set(np.unique(masks[0])) <= {0.0, 2.0}
    c = m.forward(idx, idx, s, masks)[2]["logits"]
    assert not np.allclose(a, c)
    assert CharRNN(mt, V, 6, 2, dropout=0.0).dropout_masks(T, B, np.random.default_rng(0)) is None


@pytest.mark.parametrize("mt", TYPES)
def test_same_seed_same_init(mt):
    a, b, c = CharRNN(mt, 9, 8, 2, seed=7), CharRNN(mt, 9, 8, 2, seed=7), CharRNN(mt, 9, 8, 2, seed=8)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert any(not np.array_equal(a.params[k], c.params[k]) for k in a.params)
    bound = 1 / math.sqrt(8)
    assert all(np.abs(v).max() <= bound for v in a.params.values())


@pytest.mark.parametrize("mt", WITH_LN)
def test_state_dict_round_trip(mt):
    a, b = make(mt, 5, 4, 2, seed=1), CharRNN(mt.split("+")[0], 5, 4, 2, seed=2, layer_norm=mt.endswith("+ln"))
    b.load_state_dict(a.state_dict())
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    with pytest.raises(ValueError, match="shape"):
        make(mt, 5, 3, 2).load_state_dict(a.state_dict())
    sd = a.state_dict()  # the model owns copies: training updates its parameters in place
    b.load_state_dict(sd)
    for v in sd.values():
        v += 1.0
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("mt", WITH_LN)
def test_float32_gradients_match_float64(mt):
    m64 = make(mt, 6, 16, 2, seed=4, dtype=np.float64)
    m32 = make(mt, 6, 16, 2, seed=4, dtype=np.float32)
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 6, (10, 4)), rng.integers(0, 6, (10, 4))
    g64, _ = m64.backward(m64.forward(idx, tgt, m64.zero_state(4))[2])
    g32, _ = m32.backward(m32.forward(idx, tgt, m32.zero_state(4))[2])
    for k in g64:
        scale = np.abs(g64[k]).max()
        assert np.abs(g32[k] - g64[k]).max() <= 1e-5 * max(scale, 1e-3), k


@pytest.mark.parametrize("one_hot_max", [128, 2])  # the one-hot product and the many-characters fallback
def test_scatter_columns_matches_add_at(monkeypatch, one_hot_max):
    monkeypatch.setattr(model_mod, "ONE_HOT_MAX", one_hot_max)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 7, size=200)
    cols = rng.normal(size=(5, 200))
    ref = np.zeros((9, 5))
    np.add.at(ref, idx, cols.T)
    np.testing.assert_allclose(scatter_columns(idx, cols, np.full((5, 9), 3.0)), ref.T, atol=1e-12)


@pytest.mark.parametrize("small", [0, 1 << 16])  # both paths: a gather per step, one plain gather
def test_lookup_columns_is_an_exact_gather(monkeypatch, small):
    monkeypatch.setattr(model_mod, "SMALL_CHUNK", small)
    rng = np.random.default_rng(1)
    table = rng.normal(size=(6, 9)).astype(np.float32)
    idx = rng.integers(0, 9, size=(4, 3))
    out = lookup_columns(table, idx, np.empty((4, 6, 3), np.float32))
    np.testing.assert_array_equal(out, table[:, idx].transpose(1, 0, 2))  # bit for bit, not approximately


def test_softmax_cross_entropy_is_stable():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    loss, probs = softmax_cross_entropy(logits, np.array([0, 1]))
    assert loss == pytest.approx((0.0 + math.log(3)) / 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


@pytest.mark.parametrize("emb", [0, 4])
@pytest.mark.parametrize("mt", TYPES)
def test_matches_pytorch(mt, emb):
    """The checkpoint's names load into nn.RNN/LSTM/GRU + nn.Linear (+ nn.Embedding with model.embedding)."""
    torch = pytest.importorskip("torch")
    V, H, L, T, B = 7, 5, 2, 6, 3
    m = CharRNN(mt, V, H, L, seed=1, dtype=np.float64, embedding=emb)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[mt]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            if emb:
                self.encoder = torch.nn.Embedding(V, emb)
            self.rnn = cls(emb or V, H, L)
            self.decoder = torch.nn.Linear(H, V)

    net = Net().double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    rng = np.random.default_rng(0)
    idx = rng.integers(0, V, (T, B))
    state = tuple(rng.normal(size=s.shape) for s in m.zero_state(B))
    _, new_state, cache = m.forward(idx, None, state)
    x = net.encoder(torch.from_numpy(idx)) if emb else torch.nn.functional.one_hot(torch.from_numpy(idx), V).double()
    hx = tuple(torch.from_numpy(s) for s in state)
    out, hT = net.rnn(x, hx if mt == "lstm" else hx[0])
    logits = net.decoder(out).detach().numpy().reshape(T * B, V)
    np.testing.assert_allclose(cache["logits"], logits, atol=1e-12)
    hT = hT if mt == "lstm" else (hT,)
    for a, b in zip(new_state, hT):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-12)


@pytest.mark.parametrize("mt", TYPES)
def test_input_and_recurrent_bias_split_b_hh(mt):
    from charrnn_cli.nn.cells import make_cell

    cell, rng = make_cell(mt), np.random.default_rng(0)
    bx, bh = rng.normal(size=12), rng.normal(size=12)  # 12 rows: H = 12, 3 or 4 for 1, 4 or 3 gates
    split = cell.input_bias(bx, bh) - bx + cell.recurrent_bias(bh)
    np.testing.assert_allclose(split, bh, atol=1e-15)
    assert (cell.recurrent_bias(bh) != 0).any() == (mt == "gru")  # only the GRU keeps b_hn apart


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3,), (1601, 528), (2, 7, 1)])
def test_aligned_zeros(shape, dtype):
    a = aligned_zeros(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 64 == 0 and not a.any()
    assert Workspace().get("A", shape, dtype).ctypes.data % 64 == 0  # the time loops' buffers too


@pytest.mark.parametrize("H", [48, 50, 63])
def test_step_products_start_on_cache_lines(H):
    ctx = CharRNN("gru", 65, H, 2).prepare_step(1)
    arrays = [ctx["x0"]] + [a for W, hx, P, *_ in ctx["layers"] for a in (W, hx, P)]
    assert all(a.ctypes.data % 64 == 0 for a in arrays)
    assert all(W.strides[0] % 64 == 0 for W, *_ in ctx["layers"])  # so every row does


@pytest.mark.parametrize("mt", WITH_LN)
@pytest.mark.parametrize("B,layers", [(3, 2), (1, 1), (1, 3)])  # B = 1 takes the int-index path
def test_step_equals_forward(mt, B, layers):
    V = 6
    m = make(mt, V, 7, layers, seed=5, dtype=np.float64)
    assert all((m.params[k] != 0).all() for k in m.params if k[0] == "b")  # the biases' column is exercised
    rng = np.random.default_rng(2)
    idx = rng.integers(0, V, size=(5, B))
    state = tuple(rng.normal(size=s.shape) for s in m.zero_state(B))
    _, ref_state, cache = m.forward(idx, None, state)
    ref = cache["logits"].reshape(5, B, V).copy()
    s = state
    ctx = m.prepare_step(B)
    for t in range(5):
        logits, s = m.step(int(idx[t, 0]) if B == 1 else idx[t], s, ctx)
        np.testing.assert_allclose(logits, ref[t], atol=1e-12)
    for a, b in zip(s, ref_state):
        np.testing.assert_allclose(a, b, atol=1e-12)
