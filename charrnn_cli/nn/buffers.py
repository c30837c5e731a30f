"""The buffers and small array helpers the cells share: a workspace that hands out preallocated
arrays by name, cache-line-aligned zeros, and the reshapes and reductions of the backward passes.
"""

import math

import numpy as np


class Workspace:
    """Scratch buffers reused across calls, so the time loops allocate nothing per step.

    >>> ws = Workspace(); a = ws.get("A", (2, 3), np.float32); np.shares_memory(a, ws.get("A", (3, 2), np.float32))
    True
    """

    def __init__(self, tag=""):
        self.tag = tag  # names this workspace's arrays in a team's shared memory (team.py)
        self._bufs = {}

    def get(self, name, shape, dtype):
        n = math.prod(shape)  # not np.prod: ~20x slower on a tuple
        buf = self._bufs.get(name)
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = aligned_zeros((max(n, 1),), dtype)
            self._bufs[name] = buf
        return buf[:n].reshape(shape)


def aligned_zeros(shape, dtype, align=64):
    """np.zeros whose data starts on an `align`-byte boundary (a cache line).

    NumPy's large arrays start 16 bytes into a page, so their rows straddle cache lines; aligned,
    the batch-1 products and the time loops run faster (docs/performance.md).
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buf = np.zeros(nbytes + align, np.uint8)
    start = -buf.ctypes.data % align
    return buf[start : start + nbytes].view(dtype).reshape(shape)


def rowsum(x):
    """Sum over the columns of a 2-D array as one BLAS product. rowsum(np.ones((2, 3))).tolist() == [3.0, 3.0]"""
    return np.matmul(x, np.ones(x.shape[1], dtype=x.dtype))


# 0.5 as a 0-d array per dtype: NumPy takes it faster than a Python float, whose type it must work
# out on every call, and a batch-1 step is such calls.


def as_matrix(a):
    """(F, T, B) -> (F, T*B) without a copy (the rows may be strided)."""
    return a.reshape(a.shape[0], -1)


def recurrent_weight_grad(dA, HS, out=None):
    """dWh = sum_t dA_t h_{t-1}^T: one (G, T*B) @ (T*B, H) product over the whole chunk.

    HS holds h_{t-1} at [:, t]: the hidden buffer, or HP (the states as read) when there are resets."""
    T = dA.shape[1]
    return np.matmul(as_matrix(dA), as_matrix(HS[:, :T]).T, out=out)


def reset(prev, keep_t, out):
    """prev * keep_t into out: the state a step reads, zero for the streams reset before it."""
    return np.multiply(prev, keep_t, out=out)


def hidden_buffer(h0, H, T, ws, team):
    """HS (H, T+1, B) with h_0 in column block 0, seen by the whole team (h0: this process's units)."""
    B = h0.shape[1]
    HS = team.buffer(ws, "HS", (H, T + 1, B), h0.dtype)
    HS[team.units, 0] = h0
    team.sync()
    return HS
