"""Generating text from a model: priming, temperature, top-k and argmax sampling.

State policy: generation starts from a zero state; the priming text is fed through the model
to warm it, then each generated character is fed back in. Dropout is off.

Temperature divides the logits: T < 1 sharpens the distribution (more conservative text),
T > 1 flattens it (more surprising text). top_k keeps the k most likely characters; top_p
(nucleus sampling) keeps the fewest most likely characters whose probabilities add up to at
least p (with any that tie with the last one kept); argmax (equivalent to top_k = 1) always takes
the most likely one. They apply in that order: temperature, top_k, top_p.

What the rng seed fixes: the noise that picks each character, drawn in order. The same seed,
checkpoint and options give the same text. With another priming text the model's probabilities
differ at first, but once it has forgotten the prompt, the same noise drives it to the same
characters: to compare prompts, use different seeds (or --num-samples).
"""

import math
import numbers
import os

import numpy as np


class OptionError(ValueError):
    """A sampling option out of range: `option` is its name, the message says what it must be."""

    def __init__(self, option, words):
        super().__init__(f"{option} {words}")
        self.option, self.words = option, words


def default_prime(vocab):
    """The priming text when none is given: a newline (where items and lines start), else the
    vocabulary's first character."""
    return "\n" if "\n" in vocab else vocab.chars[0]


def check_options(length=500, temperature=1.0, top_k=None, top_p=None, num_samples=1, prime=None, items=None):
    """The sampling options as `charrnn sample` and the API take them: TypeError for a wrong type,
    OptionError (a ValueError) naming the option for a value out of range; the same words for both.

    >>> check_options(temperature=float("inf"))
    Traceback (most recent call last):
    ...
    charrnn_cli.tools.sample.OptionError: temperature must be a finite number > 0
    """
    def integer(name, v, least):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r:.40}")
        if v < least:
            raise OptionError(name, f"must be >= {least}")

    def number(name, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r:.40}")

    integer("length", length, 0)
    integer("num_samples", num_samples, 1)
    if items is not None:
        integer("items", items, 1)
    number("temperature", temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise OptionError("temperature", "must be a finite number > 0")
    if top_k is not None:
        integer("top_k", top_k, 1)
    if top_p is not None:
        number("top_p", top_p)
        if not 0 < top_p <= 1:  # NaN too
            raise OptionError("top_p", "must be in (0, 1]")
    if prime is not None:
        if not isinstance(prime, str):
            raise TypeError(f"prime must be a string, got {type(prime).__name__} {prime!r:.40}")
        if prime == "":
            raise OptionError("prime", "must not be empty (leave it out to start from a newline)")

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


def _logits_to_scores(z, temperature, top_k, top_p=None):
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
    if top_p is not None and top_p < 1.0:
        z = _nucleus(z, top_p)
    return z


def _nucleus(z, top_p):
    """Scores z (..., V) with all but the nucleus set to -inf: the fewest highest-probability
    entries whose softmax probabilities sum to >= top_p, and entries tying with the last of them.
    >>> _nucleus(np.log(np.array([0.5, 0.3, 0.2])), 0.7).round(3).tolist()
    [-0.693, -1.204, -inf]
    """
    p = np.exp(z - z.max(axis=-1, keepdims=True), dtype=np.float64)
    p /= p.sum(axis=-1, keepdims=True)
    desc = -np.sort(-p, axis=-1)
    cum = np.cumsum(desc, axis=-1)
    k = np.minimum((cum < top_p * (1 - 1e-12)).sum(axis=-1, keepdims=True), p.shape[-1] - 1)  # index of the last kept
    threshold = np.take_along_axis(desc, k, axis=-1)
    return np.where(p >= threshold, z, -np.inf).astype(z.dtype, copy=False)


def _choose(logits, temperature, top_k, argmax, gumbel, top_p=None):
    """One index per row of (N, V) logits, a sample of softmax(logits / T) given (N, V) Gumbel noise."""
    if argmax or top_k == 1:
        return logits.argmax(axis=1)
    return (_logits_to_scores(logits, temperature, top_k, top_p) + gumbel).argmax(axis=1)


def _choose_one(z, temperature, top_k, argmax, g, top_p=None):
    """_choose for one row z (V,), kept lean: the noise row g (V,) is overwritten, an int is returned."""
    if argmax or top_k == 1:
        return int(z.argmax())
    if temperature != 1.0 or top_k is not None or top_p is not None:
        z = _logits_to_scores(z, temperature, top_k, top_p)
    g += z
    return int(g.argmax())


def _ban(logits, unk):
    """Never draw the unknown symbol (it names no one character): its logit to -inf, in place."""
    if unk is not None:
        logits[..., unk] = -np.inf
    return logits


def generate(model, vocab, prime, length, temperature=1.0, top_k=None, argmax=False, rng=None,
             num_samples=1, top_p=None):
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
    unk = vocab.unk
    logits = _ban(cache["logits"][-N:], unk)  # (N, V): the prediction after the last priming character
    chars = vocab.chars
    ctx = model.prepare_step(N)
    if N == 1:  # the common case, kept lean: Python ints, a row of noise per character, drawn in blocks
        yield 0, prime
        noise = _gumbel_rows(rng, logits.shape[1], length, logits.dtype)  # in the logits' dtype: a same-type add
        for t in range(length):
            j = _choose_one(logits[0], temperature, top_k, argmax, None if argmax else next(noise), top_p)
            yield 0, chars[j]
            if t + 1 < length:
                logits, state = model.step(j, state, ctx)
                if unk is not None:  # never the unknown symbol (_ban), inline: this loop is per character
                    logits[0, unk] = -np.inf
        return
    out = np.empty((length, N), dtype=np.int64)
    for t in range(length):
        noise = None if argmax else _gumbel(rng, logits.shape, logits.dtype)
        nxt = _choose(logits, temperature, top_k, argmax, noise, top_p)
        out[t] = nxt
        if t + 1 < length:
            logits, state = model.step(nxt, state, ctx)
            _ban(logits, unk)
    for n in range(N):
        yield n, prime + vocab.decode(out[:, n])


def generate_items(model, vocab, temperature=1.0, top_k=None, argmax=False, rng=None, max_length=500,
                   top_p=None):
    """Yield items, one at a time, for a model trained in lines mode: each from a zero state fed
    the newline (the start marker), sampled until the model gives the newline (the end marker)
    or max_length characters. The rng draws the noise of every item in turn."""
    rng = rng if rng is not None else np.random.default_rng()
    nl = vocab.index("\n")
    ctx = model.prepare_step(1)
    V = len(vocab)
    while True:
        logits, state = model.step(nl, model.zero_state(1), ctx)
        _ban(logits, vocab.unk)
        out = []
        noise = _gumbel_rows(rng, V, max_length + 1, logits.dtype)
        for _ in range(max_length + 1):
            j = _choose_one(logits[0], temperature, top_k, argmax, None if argmax else next(noise), top_p)
            if j == nl or len(out) == max_length:
                break
            out.append(vocab.chars[j])
            logits, state = model.step(j, state, ctx)
            _ban(logits, vocab.unk)
        yield "".join(out)


def new_items(model, vocab, n, known=frozenset(), temperature=1.0, top_k=None, argmax=False, rng=None,
              max_length=500, top_p=None):
    """Up to n items that are not in `known`, drawn from generate_items within 100 n tries:
    (items, dropped, tries). Empty items (the end marker at once) are dropped, as no training item
    is empty; dropped counts {"copies": ..., "empty": ..., "cut": items that reached max_length}."""
    gen = generate_items(model, vocab, temperature, top_k, argmax, rng, max_length=max_length, top_p=top_p)
    items, dropped, tries = [], {"copies": 0, "empty": 0, "cut": 0}, 0
    while len(items) < n and tries < 100 * n:
        item = next(gen)
        tries += 1
        if item == "":
            dropped["empty"] += 1
        elif item in known:
            dropped["copies"] += 1
        else:
            dropped["cut"] += len(item) == max_length
            items.append(item)
    return items, dropped, tries


def training_items(path, checkpoint_path):
    """The items (non-empty lines, carriage returns dropped) of a checkpoint's training file, as a
    set; DataError naming the file when it cannot be read."""
    from ..io.targets import locate
    from ..io.data import DataError, items_of

    path = locate(path, checkpoint_path) or path  # from here, else from the checkpoint's folder upwards
    if os.path.exists(path) and not os.path.isfile(path):
        raise DataError(f"novel items are told by reading the training file {os.path.abspath(path)} "
                        f"(data.path in {checkpoint_path}), which is not a regular file")
    try:
        with open(path, encoding="utf-8") as fh:
            return set(items_of(fh.read()))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"novel items are told by reading the training file {os.path.abspath(path)} "
                        f"(data.path in {checkpoint_path}): {getattr(e, 'strerror', None) or e}") from None
