"""Generating text from a model: priming, temperature, top-k and argmax sampling.

State policy: generation starts from a zero state; the priming text is fed through the model
to warm it, then each generated character is fed back in. Dropout is off.

Temperature divides the logits: T < 1 sharpens the distribution (more conservative text),
T > 1 flattens it (more surprising text). top_k keeps the k most likely characters; argmax
(equivalent to top_k = 1) always takes the most likely one.
"""

import numpy as np

# Sampling by the Gumbel-max trick: if g_1..g_V are independent standard Gumbel draws, then
# argmax_i (z_i + g_i) is distributed as softmax(z). So a sample costs one add and one argmax,
# with no exp, no normalisation and no cumulative sum; the noise is drawn ahead in blocks.


def _gumbel(rng, shape, dtype=np.float64):
    """Standard Gumbel draws -log(E), E ~ Exp(1), computed in float64, returned as `dtype`."""
    g = rng.standard_exponential(shape)
    np.maximum(g, np.finfo(np.float64).tiny, out=g)  # E == 0 would give +inf (and inf - inf = nan)
    np.log(g, out=g)
    np.negative(g, out=g)
    return g if dtype == np.float64 else g.astype(dtype)


def _gumbel_rows(rng, V, n, dtype=np.float64, rows=None):
    """The n rows of _gumbel(rng, (n, V), dtype), drawn in blocks (the same numbers, fewer calls), each used once."""
    rows = rows or max(1, min(4096, (1 << 20) // V))
    for start in range(0, n, rows):
        yield from _gumbel(rng, (min(rows, n - start), V), dtype)


TINY_TEMPERATURE = 1e-3  # below this, z / T is computed as (z - max z) / T in float64: no overflow, no inf - inf


def _logits_to_scores(z, temperature, top_k):
    """z / T with all but the top_k entries of each row set to -inf.

    A tiny T behaves as its limit: the largest logits score 0, the others -inf (argmax, ties drawn).
    """
    if temperature < TINY_TEMPERATURE:
        with np.errstate(over="ignore"):  # scores past the dtype's range are -inf: never drawn
            z = (np.subtract(z, z.max(axis=-1, keepdims=True), dtype=np.float64) / temperature).astype(z.dtype)
    elif temperature != 1.0:
        z = z * (1.0 / temperature)
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[..., -top_k, None]
        z = np.where(z >= kth, z, -np.inf)
    return z


def _choose(logits, temperature, top_k, argmax, gumbel):
    """One index per row of (N, V) logits, a sample of softmax(logits / T) given (N, V) Gumbel noise."""
    if argmax or top_k == 1:
        return logits.argmax(axis=1)
    return (_logits_to_scores(logits, temperature, top_k) + gumbel).argmax(axis=1)


def _choose_one(z, temperature, top_k, argmax, g):
    """_choose for one row z (V,), kept lean: the noise row g (V,) is overwritten, an int is returned."""
    if argmax or top_k == 1:
        return int(z.argmax())
    if temperature != 1.0 or top_k is not None:
        z = _logits_to_scores(z, temperature, top_k)
    g += z
    return int(g.argmax())


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
    if N == 1:  # the common case, kept lean: Python ints, a row of noise per character, drawn in blocks
        yield 0, prime
        noise = _gumbel_rows(rng, logits.shape[1], length, logits.dtype)  # in the logits' dtype: a same-type add
        for t in range(length):
            j = _choose_one(logits[0], temperature, top_k, argmax, None if argmax else next(noise))
            yield 0, chars[j]
            if t + 1 < length:
                logits, state = model.step(j, state, ctx)
        return
    out = np.empty((length, N), dtype=np.int64)
    for t in range(length):
        nxt = _choose(logits, temperature, top_k, argmax, None if argmax else _gumbel(rng, logits.shape, logits.dtype))
        out[t] = nxt
        if t + 1 < length:
            logits, state = model.step(nxt, state, ctx)
    for n in range(N):
        yield n, prime + vocab.decode(out[:, n])
