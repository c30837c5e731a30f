"""Generating text from a model: priming, temperature, top-k and argmax sampling.

State policy: generation starts from a zero state; the priming text is fed through the model
to warm it, then each generated character is fed back in. Dropout is off.

Temperature divides the logits: T < 1 sharpens the distribution (more conservative text),
T > 1 flattens it (more surprising text). top_k keeps the k most likely characters; argmax
(equivalent to top_k = 1) always takes the most likely one.
"""

import numpy as np


def _choose(logits, temperature, top_k, argmax, rng):
    """Pick one index per row of (N, V) logits by inverse-CDF sampling of softmax(logits / T)."""
    if argmax or top_k == 1:
        return logits.argmax(axis=1)
    z = logits if temperature == 1.0 else logits * (1.0 / temperature)
    if top_k is not None and top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    cdf = np.exp(z - z.max(axis=1, keepdims=True)).cumsum(axis=1, dtype=np.float64)
    u = rng.random(z.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), z.shape[1] - 1)


def _choose_one(z, temperature, top_k, argmax, u):
    """_choose for one row of logits z (V,) and a uniform draw u, kept lean: an int, one binary search."""
    if argmax or top_k == 1:
        return int(z.argmax())
    if temperature != 1.0:
        z = z * (1.0 / temperature)
    if top_k is not None and top_k < z.shape[0]:
        z = np.where(z >= np.partition(z, -top_k)[-top_k], z, -np.inf)
    cdf = np.exp(z - np.maximum.reduce(z))  # unnormalised, shifted for a stable exp
    np.add.accumulate(cdf, out=cdf)
    return min(int(cdf.searchsorted(u * cdf[-1], side="right")), z.shape[0] - 1)


def _uniforms(rng, block=4096):
    """rng.random() draws, taken in blocks (the same numbers, fewer calls)."""
    while True:
        yield from rng.random(block).tolist()


def generate(model, vocab, prime, length, temperature=1.0, top_k=None, argmax=False, rng=None,
             num_samples=1):
    """Yield (sample_index, text) pieces: first the priming text, then one character per step.

    All samples run as one batch; yields go sample by sample only when num_samples == 1,
    otherwise whole samples are yielded at the end, in order.
    """
    assert temperature > 0 and length >= 0 and prime
    rng = rng if rng is not None else np.random.default_rng()
    N = num_samples
    state = model.zero_state(N)
    idx = vocab.encode(prime)
    x = np.repeat(idx[:, None], N, axis=1)  # (P, N)
    _, state, cache = model.forward(x, None, state)
    logits = cache["logits"][-N:]  # (N, V): the prediction after the last priming character
    chars = vocab.chars
    ctx = model.prepare_step(N)
    if N == 1:  # the common case, kept lean: Python ints, one uniform per character, drawn in blocks
        yield 0, prime
        uniforms = _uniforms(rng)
        for t in range(length):
            j = _choose_one(logits[0], temperature, top_k, argmax, 0.0 if argmax else next(uniforms))
            yield 0, chars[j]
            if t + 1 < length:
                logits, state = model.step(j, state, ctx)
        return
    out = np.empty((length, N), dtype=np.int64)
    for t in range(length):
        nxt = _choose(logits, temperature, top_k, argmax, rng)
        out[t] = nxt
        if t + 1 < length:
            logits, state = model.step(nxt, state, ctx)
    for n in range(N):
        yield n, prime + vocab.decode(out[:, n])
