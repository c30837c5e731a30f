"""The math of charrnn, stated plainly: read this file to learn what the fast code computes.

Every operation is a forward function returning (output, cache) and a backward function taking
the gradient of the output and the cache, side by side, one time step and one sequence at a time,
with no buffers, no batching tricks and no processes. Parameters carry PyTorch's names and gate
order (the checkpoint's). The fast path (cells.py, model.py, optim.py) is tested against this
file to 1e-12 in float64 (tests/test_reference.py), for every cell, with dropout, state resets
and every optimizer, so what you read here is what trains.

Shapes: x (B, In) one step of input, h and c (B, H), W_ih (G*H, In), W_hh (G*H, H), biases (G*H,);
G = 1 (RNN), 4 (LSTM), 3 (GRU). sigma is the logistic sigmoid.

    RNN   h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    LSTM  i, f, g, o = sigma, sigma, tanh, sigma of the blocks of (W_ih x + b_ih + W_hh h + b_hh)
          c' = f * c + i * g;   h' = o * tanh(c')
          with model.layer_norm, each block of that sum is first normalised over its H units and
          scaled and shifted per unit (layer_norm_forward below, gain and shift: ln_weight, ln_bias)
    GRU   r, z = sigma of the first two blocks of (W_ih x + b_ih) + (W_hh h + b_hh)
          n = tanh(block 3 of (W_ih x + b_ih) + r * block 3 of (W_hh h + b_hh))
          h' = (1 - z) * n + z * h
    model x_0 = one-hot(character), or with model.embedding its row of encoder.weight (V, D);
          x_{k+1} = dropout(h of layer k);  logits = x_L W_dec^T + b_dec
          with model.weight_drop, a training chunk runs on W_hh * M (M: 0 or 1 / keep per weight)
    loss  mean over every position of -log softmax(logits)[target]
"""

import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# ---- the cells: one time step -------------------------------------------------------------


def rnn_forward(x, state, W_ih, W_hh, b_ih, b_hh):
    (h,) = state
    h_new = np.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)
    return (h_new,), (x, h, h_new)


def rnn_backward(dstate, cache, W_ih, W_hh):
    """Gradients of (x, state, W_ih, W_hh, b_ih, b_hh) from the gradient of the new state."""
    x, h, h_new = cache
    (dh_new,) = dstate
    da = dh_new * (1 - h_new ** 2)  # backprop through tanh
    return da @ W_ih, (da @ W_hh,), da.T @ x, da.T @ h, da.sum(0), da.sum(0)


def lstm_forward(x, state, W_ih, W_hh, b_ih, b_hh, ln_weight=None, ln_bias=None):
    h, c = state
    a = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh  # (B, 4H): the blocks i, f, g, o
    ln = None
    if ln_weight is not None:  # model.layer_norm
        a, ln = layer_norm_forward(a, ln_weight, ln_bias, blocks=4)
    ai, af, ag, ao = np.split(a, 4, axis=1)
    i, f, g, o = sigmoid(ai), sigmoid(af), np.tanh(ag), sigmoid(ao)
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    return (h_new, c_new), (x, h, c, i, f, g, o, c_new, ln)


def lstm_backward(dstate, cache, W_ih, W_hh, ln_weight=None):
    """Gradients of (x, state, W_ih, W_hh, b_ih, b_hh), then of ln_weight and ln_bias if it has them."""
    x, h, c, i, f, g, o, c_new, ln = cache
    dh_new, dc_new = dstate
    tc = np.tanh(c_new)
    do = dh_new * tc
    dc = dc_new + dh_new * o * (1 - tc ** 2)  # c' reaches h' through tanh
    di, df, dg = dc * g, dc * c, dc * i
    da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)], axis=1)
    dln = ()
    if ln is not None:
        da, dgain, dshift = layer_norm_backward(da, ln, ln_weight, blocks=4)
        dln = (dgain, dshift)
    return (da @ W_ih, (da @ W_hh, dc * f), da.T @ x, da.T @ h, da.sum(0), da.sum(0)) + dln


def layer_norm_forward(a, gain, shift, blocks, eps=1e-5):
    """Each of the `blocks` blocks of a (B, G*H) normalised over its H units, then gain * n + shift."""
    a3 = a.reshape(len(a), blocks, -1)
    std = np.sqrt(a3.var(axis=2, keepdims=True) + eps)  # (B, blocks, 1)
    n = ((a3 - a3.mean(axis=2, keepdims=True)) / std).reshape(a.shape)
    return gain * n + shift, (n, std)


def layer_norm_backward(dout, cache, gain, blocks):
    """Gradients of (a, gain, shift) from the gradient of gain * n + shift."""
    n, std = cache
    dn = (dout * gain).reshape(len(dout), blocks, -1)
    n3 = n.reshape(dn.shape)
    da = (dn - dn.mean(axis=2, keepdims=True) - n3 * (dn * n3).mean(axis=2, keepdims=True)) / std
    return da.reshape(dout.shape), (dout * n).sum(0), dout.sum(0)


def gru_forward(x, state, W_ih, W_hh, b_ih, b_hh):
    (h,) = state
    ax = x @ W_ih.T + b_ih  # (B, 3H): blocks r, z, n of the input term
    ah = h @ W_hh.T + b_hh  # and of the recurrent term
    xr, xz, xn = np.split(ax, 3, axis=1)
    hr, hz, hn = np.split(ah, 3, axis=1)
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    h_new = (1 - z) * n + z * h
    return (h_new,), (x, h, r, z, n, hn)


def gru_backward(dstate, cache, W_ih, W_hh):
    x, h, r, z, n, hn = cache
    (dh_new,) = dstate
    dn = dh_new * (1 - z)
    dz = dh_new * (h - n)
    dan = dn * (1 - n ** 2)  # backprop through tanh
    dr = dan * hn
    dar, daz = dr * r * (1 - r), dz * z * (1 - z)  # through the sigmoids
    dax = np.concatenate([dar, daz, dan], axis=1)  # gradient of the input term's blocks
    dah = np.concatenate([dar, daz, dan * r], axis=1)  # and of the recurrent term's (r gates block n)
    dh = dah @ W_hh + dh_new * z
    return dax @ W_ih, (dh,), dax.T @ x, dah.T @ h, dax.sum(0), dah.sum(0)


NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # a layer's parameters: rnn.{name}_l{k}
LN_NAMES = ("ln_weight", "ln_bias")  # and with model.layer_norm (the LSTM only)
CELLS = {"rnn": (rnn_forward, rnn_backward, 1), "lstm": (lstm_forward, lstm_backward, 2),
         "gru": (gru_forward, gru_backward, 1)}  # forward, backward, state arrays (h; h and c)


# ---- the decoder and the loss ---------------------------------------------------------------


def decoder_forward(x, W, b):
    return x @ W.T + b, x  # logits (N, V)


def decoder_backward(dlogits, x, W):
    return dlogits @ W, dlogits.T @ x, dlogits.sum(0)  # dx, dW, db


def cross_entropy_forward(logits, targets):
    """Mean of -log softmax(logits)[target] over the N rows."""
    z = logits - logits.max(axis=1, keepdims=True)  # the same softmax, without overflow
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    N = len(targets)
    return -logp[np.arange(N), targets].mean(), (np.exp(logp), targets)


def cross_entropy_backward(cache):
    probs, targets = cache
    d = probs.copy()
    d[np.arange(len(targets)), targets] -= 1  # softmax then negative log-likelihood: p - onehot
    return d / len(targets)


# ---- the model: a chunk of T steps over B streams ---------------------------------------------


def model_forward(params, cell, idx, targets, state, masks=None, resets=None, wmasks=None):
    """Loss and new state of a (T, B) chunk of character indices from `state` (a tuple of (L, B, H)).

    params: PyTorch names (rnn.weight_ih_l{k}, ..., decoder.weight, decoder.bias). masks: one
    (T, B, H) inverted-dropout mask per layer (kept units scaled by 1 / keep), or None. resets:
    (T, B) bool, True where a stream's state is set to zero before step t (an item starts). wmasks:
    weight drop, one mask per layer shaped like rnn.weight_hh_l{k} (0 or 1 / keep): the chunk runs on
    weight_hh * mask."""
    fwd, _, n_state = CELLS[cell]
    params = dropped_weights(params, wmasks)
    names = NAMES + (LN_NAMES if "rnn.ln_weight_l0" in params else ())
    T, B = idx.shape
    L = len(state[0])
    V = params["decoder.bias"].shape[0]
    layer_state = [[s[k] for s in state] for k in range(L)]  # per layer: [h] or [h, c], each (B, H)
    caches, tops = [], []
    for t in range(T):
        x = np.eye(V)[idx[t]] if "encoder.weight" not in params else params["encoder.weight"][idx[t]]  # (B, V or D)
        step = []
        keep = None if resets is None else ~resets[t][:, None]  # (B, 1): False where an item starts
        for k in range(L):
            s = layer_state[k]
            if keep is not None:
                s = [a * keep for a in s]  # a new item: this stream starts from zero
            new, cache = fwd(x, tuple(s), *[params[f"rnn.{n}_l{k}"] for n in names])
            layer_state[k] = list(new)
            x = new[0] if masks is None else new[0] * masks[k][t]  # dropout on the layer's output
            step.append((cache, keep))
        caches.append(step)
        tops.append(x)
    logits, dcache = decoder_forward(np.concatenate(tops), params["decoder.weight"], params["decoder.bias"])
    loss, lcache = cross_entropy_forward(logits, targets.reshape(-1))
    new_state = tuple(np.stack([layer_state[k][j] for k in range(L)]) for j in range(n_state))
    return loss, new_state, (caches, dcache, lcache, masks, resets, T, B, L, wmasks, idx)


def dropped_weights(params, wmasks):
    """The parameters with each layer's weight_hh multiplied by its weight-drop mask (None: as they are)."""
    if wmasks is None:
        return params
    return dict(params, **{f"rnn.weight_hh_l{k}": params[f"rnn.weight_hh_l{k}"] * m for k, m in enumerate(wmasks)})


def model_backward(params, cell, cache):
    """Gradients of the mean loss for every parameter (PyTorch names) and of the initial state.
    Truncated BPTT: nothing arrives at the final state."""
    _, bwd, n_state = CELLS[cell]
    norm = "rnn.ln_weight_l0" in params
    caches, dcache, lcache, masks, resets, T, B, L, wmasks, idx = cache
    params = dropped_weights(params, wmasks)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dlogits = cross_entropy_backward(lcache)
    dtop, grads["decoder.weight"], grads["decoder.bias"] = decoder_backward(dlogits, dcache, params["decoder.weight"])
    dtop = dtop.reshape(T, B, -1)
    H = dtop.shape[2]
    dstate = [[np.zeros((B, H)) for _ in range(n_state)] for _ in range(L)]  # gradient into each layer's state
    for t in range(T - 1, -1, -1):
        dx = dtop[t]
        for k in range(L - 1, -1, -1):
            c, keep = caches[t][k]
            if masks is not None:
                dx = dx * masks[k][t]  # backprop through dropout
            dnew = list(dstate[k])
            dnew[0] = dnew[0] + dx  # h' goes up to the next layer and on to the next step
            W = [params[f"rnn.{n}_l{k}"] for n in ("weight_ih", "weight_hh") + (("ln_weight",) if norm else ())]
            dx, ds, *dparams = bwd(tuple(dnew), c, *W)
            for name, g in zip(NAMES + (LN_NAMES if norm else ()), dparams):
                grads[f"rnn.{name}_l{k}"] += g
            dstate[k] = [d if keep is None else d * keep for d in ds]  # nothing flows back through a reset
        if "encoder.weight" in params:  # dx: the gradient of step t's embedded characters
            np.add.at(grads["encoder.weight"], idx[t], dx)
    for k, m in enumerate(wmasks or ()):
        grads[f"rnn.weight_hh_l{k}"] *= m  # the loss saw weight_hh * m: the chain rule multiplies by m
    dstate0 = tuple(np.stack([dstate[k][j] for k in range(L)]) for j in range(n_state))
    return grads, dstate0


# ---- the optimizers: one update of a parameter p from its gradient g (t counts updates from 1) ----


def adam(p, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g ** 2
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)  # bias corrections
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def rmsprop(p, g, v, lr, alpha=0.99, eps=1e-8):
    v = alpha * v + (1 - alpha) * g ** 2
    return p - lr * g / (np.sqrt(v) + eps), v


def adagrad(p, g, v, lr, eps=1e-8):
    v = v + g ** 2
    return p - lr * g / (np.sqrt(v) + eps), v


def sgd(p, g, u, lr, momentum=0.9):
    u = momentum * u + g
    return p - lr * u, u


def weight_decay(p, lr, wd):
    """Decoupled weight decay (AdamW), applied to the weight matrices before the optimizer's update."""
    return p * (1 - lr * wd)


def clip_by_global_norm(grads, threshold):
    """Scale every gradient by threshold / norm when the norm of all of them exceeds threshold."""
    norm = np.sqrt(sum((g ** 2).sum() for g in grads.values()))
    scale = threshold / norm if norm > threshold else 1.0
    return {k: g * scale for k, g in grads.items()}, norm
