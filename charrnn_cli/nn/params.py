"""The model's parameters and its input: initialisation, PyTorch's names and gate order, and the
one-hot input product done as a lookup of columns (and its gradient, a scatter).
"""

import numpy as np


def init_params(cell, vocab_size, hidden_size, num_layers, rng, dtype, init="pytorch", init_scale=None, forget_bias=0.0,
                layer_norm=False, embedding=0):
    """Internal parameters: Wx{k} (G*H, In), Wh{k} (G*H, H), bx{k}, bh{k} (G*H,), Wy (V, H), by (V,);
    with layer_norm also the gates' gain lw{k} (G*H,) = 1 and shift lb{k} (G*H,) = 0 (layernorm.py);
    with an embedding of D numbers, E (V, D) ~ N(0, 1) as PyTorch's nn.Embedding, and In = D for layer 0.

    PyTorch's shapes, with the gate blocks in the cell's internal order.
    init="pytorch": every tensor U(-1/sqrt(H), 1/sqrt(H)) (PyTorch's RNN and Linear default);
    init="normal": weights N(0, init_scale^2), biases zero;
    init="xavier": weights U(+-sqrt(6 / (fan_in + fan_out))) per gate block, biases zero.
    forget_bias is added to the LSTM forget-gate input bias (to its shift with layer_norm, where a
    bias before the normalisation would be normalised away).
    """
    G, H, V = cell.gates, hidden_size, vocab_size
    bound = 1.0 / np.sqrt(H)

    def weight(fan_in, fan_out_total, shape):
        if init == "pytorch":
            return rng.uniform(-bound, bound, size=shape)
        if init == "normal":
            scale = 0.01 if init_scale is None else init_scale
            return rng.normal(0.0, scale, size=shape)
        if init == "xavier":
            limit = np.sqrt(6.0 / (fan_in + fan_out_total))
            if init_scale is not None:
                limit *= init_scale
            return rng.uniform(-limit, limit, size=shape)
        raise ValueError(f"unknown init {init!r}")

    def bias(shape):
        if init == "pytorch":
            return rng.uniform(-bound, bound, size=shape)
        return np.zeros(shape)

    p = {}
    for k in range(num_layers):
        n_in = (embedding or V) if k == 0 else H
        p[f"Wx{k}"] = weight(n_in, H, (G * H, n_in))
        p[f"Wh{k}"] = weight(H, H, (G * H, H))
        p[f"bx{k}"] = bias((G * H,))
        p[f"bh{k}"] = bias((G * H,))
        if layer_norm:  # no draw from rng: the weights are those of the same model without it
            p[f"lw{k}"], p[f"lb{k}"] = np.ones(G * H), np.zeros(G * H)
        if cell.name == "lstm":
            p[f"lb{k}" if layer_norm else f"bx{k}"][H : 2 * H] += forget_bias  # internal block 1 is the forget gate
    p["Wy"] = weight(H, V, (V, H))
    p["by"] = bias((V,))
    if embedding:  # drawn last: the other parameters are those of the same model without it (Wx0 aside)
        p["E"] = rng.normal(0.0, 1.0, size=(V, embedding))
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in p.items()}


def _block_perm(blocks, H):
    """Row order taking internal gate blocks to PyTorch's. _block_perm((0, 2, 1), 1) -> [0, 2, 1]"""
    perm = np.empty(len(blocks) * H, dtype=np.int64)
    for j, b in enumerate(blocks):
        perm[b * H : (b + 1) * H] = np.arange(j * H, (j + 1) * H)
    return perm


# internal name prefix -> PyTorch-style name (the layer norm's: ours, PyTorch's LSTM has none)
PUBLIC = {"Wx": "rnn.weight_ih_l{}", "Wh": "rnn.weight_hh_l{}", "bx": "rnn.bias_ih_l{}", "bh": "rnn.bias_hh_l{}",
          "lw": "rnn.ln_weight_l{}", "lb": "rnn.ln_bias_l{}"}


def layer_prefixes(layer_norm=False):
    """The internal name prefixes of one layer's parameters, each with the gate blocks on its first axis.
    >>> layer_prefixes(True)
    ('Wx', 'Wh', 'bx', 'bh', 'lw', 'lb')
    """
    return ("Wx", "Wh", "bx", "bh") + (("lw", "lb") if layer_norm else ())


def state_dict_names(num_layers, layer_norm=False, embedding=0):
    """The PyTorch-style parameter names of a model. state_dict_names(1)[0] == 'rnn.weight_ih_l0'"""
    names = ["encoder.weight"] if embedding else []
    for k in range(num_layers):
        names += [PUBLIC[n].format(k) for n in layer_prefixes(layer_norm)]
    return names + ["decoder.weight", "decoder.bias"]


ONE_HOT_MAX = 128  # distinct characters in a chunk up to which the lookup gradient is a one-hot product


SMALL_CHUNK = 1 << 16  # size of the (T, G*H, B) input contribution up to which the lookup is a plain gather


def present(idx, V):
    """(uniq, inv): the sorted distinct values of idx in range(V) and idx's positions in them.

    np.unique's result by counting, several times faster on a chunk's worth of indices.
    >>> [a.tolist() for a in present(np.array([4, 1, 4]), 6)]
    [[1, 4], [1, 0, 1]]
    """
    seen = np.bincount(idx.reshape(-1), minlength=V) > 0
    rank = np.cumsum(seen) - 1  # rank[v]: v's position among the characters present
    return np.flatnonzero(seen), rank[idx]


def lookup_columns(table, idx, out):
    """out[t, :, b] = table[:, idx[t, b]]: the one-hot product W_ih x for a (T, B) chunk, time-major.

    One gather per step, np.take with mode="clip": with out= and the default mode="raise", NumPy
    gathers into a temporary and copies it over (numpy/numpy#13182), which made the gather cost
    as much as a one-hot product (docs/performance.md). The indices are
    in range, so clipping changes nothing. A small chunk is one plain gather.
    >>> lookup_columns(np.array([[1., 2.], [3., 4.]]), np.array([[1, 0]]), np.empty((1, 2, 2))).tolist()
    [[[2.0, 1.0], [4.0, 3.0]]]
    """
    if out.size <= SMALL_CHUNK:  # a few steps of a small model: a plain gather costs least
        np.copyto(out, table[:, idx].transpose(1, 0, 2))
        return out
    for t in range(idx.shape[0]):
        np.take(table, idx[t], axis=1, out=out[t], mode="clip")
    return out


def scatter_columns(idx, cols, out):
    """out[:, v] = sum of cols[:, n] where idx[n] == v; the gradient of lookup_columns.

    One matrix product with a one-hot matrix over the characters present (np.add.at is much
    slower); many distinct characters fall back to sorting the columns by character (with
    np.take: fancy indexing, cols[:, order], is slower) and summing runs.
    >>> scatter_columns(np.array([1, 0, 1]), np.array([[1., 2., 3.]]), np.zeros((1, 2))).tolist()
    [[2.0, 4.0]]
    """
    uniq, inv = present(idx, out.shape[1])
    out[...] = 0
    if len(uniq) <= ONE_HOT_MAX:
        onehot = np.zeros((len(idx), len(uniq)), dtype=cols.dtype)  # (N, U)
        onehot[np.arange(len(idx)), inv] = 1
        out[:, uniq] = np.matmul(cols, onehot)
    else:
        order = np.argsort(inv, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
        out[:, uniq] = np.add.reduceat(np.take(cols, order, axis=1, mode="clip"), starts, axis=1)
    return out
