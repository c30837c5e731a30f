"""Check every hand-written gradient against centred finite differences in float64.

For a parameter entry w the numerical gradient is (L(w + eps) - L(w - eps)) / (2 eps) with the
same inputs, initial state and dropout masks; the error reported is

    |analytic - numeric| / max(|analytic| + |numeric|, floor)

The floor (1e-4 by default) keeps entries whose true gradient is ~0 from reporting
rounding noise as a large relative error; for every other entry it is the plain relative error.
"""

from dataclasses import dataclass

import numpy as np

from .model import CharRNN
from .params import PUBLIC

EPS = 1e-5  # near the balance of truncation (~eps^2) and rounding (~1e-16 / eps) in float64: ~(1e-16)^(1/3)
FLOOR = 1e-4


@dataclass
class CheckRow:
    model: str
    tensor: str  # PyTorch-style name, or the initial state ("h_0", "c_0")
    shape: tuple
    checked: int  # entries compared
    max_rel_error: float


def _entries(size, max_entries, rng):
    if size <= max_entries:
        return np.arange(size)
    return rng.choice(size, size=max_entries, replace=False)


def public_name(internal):
    """public_name("Wh1") -> 'rnn.weight_hh_l1'; the decoder and state keep plain names."""
    if internal == "Wy":
        return "decoder.weight"
    if internal == "by":
        return "decoder.bias"
    if internal == "E":
        return "encoder.weight"
    return PUBLIC[internal[:2]].format(internal[2:])


def check_model(model_type, num_layers=2, hidden_size=6, vocab_size=5, seq_length=5, batch_size=3,
                dropout=0.25, seed=0, max_entries=60, init="pytorch", init_scale=None, forget_bias=0.0,
                resets=False, layer_norm=False, weight_drop=0.0, embedding=0):
    """Compare analytic and numerical gradients for one architecture; returns a list of CheckRow.

    resets: state resets inside the chunk (lines mode), at random steps of random streams.
    weight_drop: the chunk runs on W_hh times a fixed weight-drop mask (model.weight_drop).
    embedding: characters enter as vectors of this many numbers (model.embedding)."""
    rng = np.random.default_rng(seed)
    model = CharRNN(model_type, vocab_size, hidden_size, num_layers, dropout, seed=seed, dtype=np.float64,
                    init=init, init_scale=init_scale, forget_bias=forget_bias, layer_norm=layer_norm,
                    weight_drop=weight_drop, embedding=embedding)
    idx = rng.integers(0, vocab_size, size=(seq_length, batch_size))
    targets = rng.integers(0, vocab_size, size=(seq_length, batch_size))
    # a nonzero initial state, so its gradient and the first step's recurrent term are exercised
    state = tuple(rng.normal(0, 0.5, size=s.shape) for s in model.zero_state(batch_size))
    masks = model.dropout_masks(seq_length, batch_size, rng)  # fixed: the same for every evaluation
    wmasks = model.weight_masks(rng)
    reset = rng.random((seq_length, batch_size)) < 0.3 if resets else None
    if resets:
        reset[seq_length // 2, 0] = True  # at least one reset inside the chunk

    def loss():
        return model.forward(idx, targets, state, masks, reset, wmasks=wmasks)[0]

    _, _, cache = model.forward(idx, targets, state, masks, reset, wmasks=wmasks)
    grads, dstate0 = model.backward(cache)
    grads = {k: v.copy() for k, v in grads.items()}
    dstate0 = tuple(d.copy() for d in dstate0)

    # (name, array, analytic gradient, shape shown): parameters have PyTorch's (out, in) shapes
    targets_to_check = [(public_name(k), v, grads[k], v.shape) for k, v in model.params.items()]
    for name, s, d in zip(model.cell.state_names, state, dstate0):
        targets_to_check.append((f"{name}_0", s, d, s.shape))

    rows = []
    for name, arr, analytic, shown in targets_to_check:
        flat, aflat = arr.reshape(-1), analytic.reshape(-1)
        worst = 0.0
        entries = _entries(flat.size, max_entries, rng)
        for j in entries:
            old = flat[j]
            flat[j] = old + EPS
            lp = loss()
            flat[j] = old - EPS
            lm = loss()
            flat[j] = old
            num = (lp - lm) / (2 * EPS)
            err = abs(aflat[j] - num) / max(abs(aflat[j]) + abs(num), FLOOR)
            worst = max(worst, err)
        tags = (("+ln", layer_norm), ("+wdrop", weight_drop), ("+emb", embedding), ("+resets", resets))
        label = model_type + "".join(tag for tag, on in tags if on)
        rows.append(CheckRow(label, name, tuple(shown), len(entries), float(worst)))
    return rows
