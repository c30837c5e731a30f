"""Scoring a model on text: average negative log-likelihood in nats and bits per character.

State policy: scoring always starts from a zero state and carries it through each stream;
dropout is off. With `streams` = 1 every character after the first is predicted from all the
characters before it. With more streams the text is cut into that many contiguous pieces scored
in parallel (each from a zero state): much faster, and what validation during training uses.
"""

import math

import numpy as np

from .data import Streams

LN2 = math.log(2.0)


def score(model, data, streams=1, seq_length=256, max_chars=None):
    """(nats_per_char, chars_scored) of `model` on the index array `data`."""
    if max_chars is not None:
        data = data[: max_chars + 1]
    n = len(data)
    if n < 2:
        return float("nan"), 0
    streams = max(1, min(streams, n - 1))
    s = Streams(data, streams, seq_length)
    state = model.zero_state(streams)
    total, count = 0.0, 0
    for j in range(s.steps_per_epoch):
        x, y = s.chunk(j * seq_length)
        loss, state, _ = model.forward(x, y, state)
        total += loss * y.size
        count += y.size
    return total / count, count


def bits(nats):
    """nats/char -> bits/char. bits(math.log(2)) == 1.0"""
    return nats / LN2


def score_file(model, vocab, path, seq_length=256):
    """Score a UTF-8 file from a zero state with the state carried (one stream), chunk by chunk.

    Characters outside the vocabulary are dropped before scoring: they are neither predicted nor
    used as context. Returns (nats_per_char, chars_scored, {unknown char: count}).
    Memory is bounded by the read size, whatever the file's length.
    """
    from .data import codepoint_chunks

    lut = vocab.lookup_table(np.int64, fill=-1)  # -1: not in the vocabulary
    unknown = {}
    state = model.zero_state(1)
    total, count = 0.0, 0
    carry = np.zeros(0, dtype=np.int64)  # the last character of the previous piece: next input
    for cps in codepoint_chunks(path):
        cps = cps.astype(np.int64)
        inside = cps < lut.size
        idx = np.full(cps.shape, -1, dtype=np.int64)
        idx[inside] = lut[cps[inside]]
        bad = idx < 0
        if bad.any():
            vals, counts = np.unique(cps[bad], return_counts=True)
            for v, c in zip(vals.tolist(), counts.tolist()):
                unknown[chr(v)] = unknown.get(chr(v), 0) + c
            idx = idx[~bad]
        seq = np.concatenate([carry, idx])
        for start in range(0, len(seq) - 1, seq_length):
            piece = seq[start : start + seq_length + 1]
            if len(piece) < 2:
                break
            x, y = piece[:-1, None], piece[1:, None]  # (T, 1)
            loss, state, _ = model.forward(x, y, state)
            total += loss * y.size
            count += y.size
        carry = seq[-1:]
    if count == 0:
        return float("nan"), 0, unknown
    return total / count, count, unknown
