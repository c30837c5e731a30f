"""Scoring a model on text: average negative log-likelihood in nats and bits per character.

State policy: scoring always starts from a zero state and carries it through each stream;
dropout is off. With `streams` = 1 every character after the first is predicted from all the
characters before it. With more streams the text is cut into that many contiguous pieces scored
in parallel (each from a zero state): much faster, and what validation during training uses.
"""

import math
import os

import numpy as np

from ..io.data import Streams
from ..parallel.solo import SOLO

LN2 = math.log(2.0)


def score(model, data, streams=1, seq_length=256, max_chars=None, nl=None):
    """(nats_per_char, chars_scored) of `model` on the index array `data`."""
    total, count, _ = score_sums(model, data, streams, seq_length, max_chars, nl=nl)
    return (total / count if count else float("nan")), count


def score_sums(model, data, streams=1, seq_length=256, max_chars=None, rank=0, size=1, nl=None, team=SOLO):
    """(summed nats, characters scored, items ended) over the streams process `rank` of `size`
    owns, out of `streams` cut from data[:max_chars + 1]; the processes' sums add up to one
    process's. nl: lines mode, the newline's index: the state resets where an item starts, and
    the targets that are newlines (items ended) are counted. team: the training's team
    (team.py), which then shares each forward pass."""
    from ..io.data import last_newline
    from ..parallel.dist import split

    if max_chars is not None:
        data = data[: max_chars + 1]
    n = len(data)
    if n < 2:
        return 0.0, 0, 0
    streams = max(1, min(streams, n - 1))
    first, end = split(streams, size, rank)
    if first == end:
        return 0.0, 0, 0
    align = None if nl is None else (lambda pos: last_newline(data, pos, nl))  # streams start at items
    s = Streams(data, streams, seq_length, block=(first, end), align=align)
    state = model.zero_state(end - first)
    total, count, ends = 0.0, 0, 0
    for j in range(s.steps_per_epoch):
        x, y = s.chunk(j * seq_length)
        resets = None if nl is None else x == nl
        team.begin(x, state, None, resets, backward=False, targets=y)  # the team's other processes: the same pass
        loss, state, _ = model.forward(x, y, state, resets=resets, team=team)
        total += loss * y.size
        count += y.size
        if nl is not None:
            ends += int((y == nl).sum())
    return total, count, ends


def bits(nats):
    """nats/char -> bits/char. bits(math.log(2)) == 1.0"""
    return nats / LN2


def score_file(model, vocab, path, seq_length=256, lines=False):
    """Score a UTF-8 file from a zero state with the state carried (one stream), chunk by chunk.

    Characters outside the vocabulary are scored as the unknown symbol when the vocabulary has one
    (the model then predicts "a rare character" for them), else dropped before scoring: neither
    predicted nor used as context. Returns (nats_per_char, chars_scored, {outside char: count}).
    Memory is bounded by the read size, whatever the file's length.
    """
    from ..io.data import text_chunks

    lut = vocab.lookup_table(np.int64, fill=-1)  # -1: not in the vocabulary
    unk = vocab.unk
    unknown = {}
    state = model.zero_state(1)
    total, count = 0.0, 0
    carry = np.zeros(0, dtype=np.int64)  # the last character of the previous piece: next input
    nl = vocab.index("\n") if lines else None  # lines: the file's items, each from a zero state
    for cps in text_chunks(path, "lines" if lines else "stream"):
        cps = cps.astype(np.int64)
        inside = cps < lut.size
        idx = np.full(cps.shape, -1, dtype=np.int64)
        idx[inside] = lut[cps[inside]]
        bad = idx < 0
        if bad.any():
            vals, counts = np.unique(cps[bad], return_counts=True)
            for v, c in zip(vals.tolist(), counts.tolist()):
                unknown[chr(v)] = unknown.get(chr(v), 0) + c
            if unk is None:
                idx = idx[~bad]
            else:
                idx[bad] = unk
        seq = np.concatenate([carry, idx])
        for start in range(0, len(seq) - 1, seq_length):
            piece = seq[start : start + seq_length + 1]
            if len(piece) < 2:
                break
            x, y = piece[:-1, None], piece[1:, None]  # (T, 1)
            loss, state, _ = model.forward(x, y, state, resets=None if nl is None else x == nl)
            total += loss * y.size
            count += y.size
        carry = seq[-1:]
    if count == 0:
        return float("nan"), 0, unknown
    return total / count, count, unknown


def score_validation_split(ck, model, warn=None):
    """Score the validation split of the data a checkpoint was trained on, as training cut it
    (the last data.val_fraction of data.path), with one stream carried from a zero state.

    A checkpoint's paths are read, never written to: the text is read through the run's own
    cache (the checkpoint's folder/data_cache) when a valid one is there, else read and encoded
    in memory. data.cache_dir in the checkpoint is not used. Returns (nats_per_char,
    chars_scored, data_path); raises DataError when the file is gone, is not a regular file, its
    characters differ, or there is no validation split.
    """
    from ..io.targets import locate
    from ..io.cache import find_cache
    from ..io.data import DataError, check_text_file, read_validation_split

    d = ck.config.data
    if d.val_fraction == 0:
        raise DataError(f"{ck.path} was trained with data.val_fraction 0: no validation split; pass a FILE to score")
    path = locate(d.path, ck.path)  # from here, else from the checkpoint's folder upwards, as train --resume
    if path is None:
        raise DataError(f"the training data {d.path} (data.path in {ck.path}) is not found from here or above "
                        f"the checkpoint's folder; pass a FILE to score")
    check_text_file(path, "training data")
    lines = d.mode == "lines"
    corpus = find_cache(path, os.path.join(os.path.dirname(os.path.abspath(ck.path)), "data_cache"), d.mode,
                        d.min_count)
    if corpus is not None and corpus.vocab == ck.vocab:
        _, val = corpus.split(d.val_fraction, lines=lines)
        sha1 = corpus.sha1
    else:
        val, sha1 = read_validation_split(path, ck.vocab, d.val_fraction, d.mode, d.min_count)
    stored = ck.get("data.sha1")
    if warn is not None and stored is not None and str(stored) and sha1 != str(stored):
        warn(f"warning: {path} changed since {ck.path} was trained: its validation split is other text now")
    nats, count = score(model, val, streams=1, seq_length=256, nl=ck.vocab.index("\n") if lines else None)
    return nats, count, path
