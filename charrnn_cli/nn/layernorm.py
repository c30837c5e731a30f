"""Layer normalisation of the LSTM's gates (model.layer_norm; Ba, Kiros & Hinton 2016).

Each gate block's pre-activation a_j (H, B) (j = i, f, o, g: W_ih x + b_ih + W_hh h + b_hh) is
normalised over its H units, stream by stream, then scaled and shifted per unit:

    n_j   = (a_j - mean(a_j)) / sqrt(var(a_j) + eps)      mean and variance over the H units
    a'_j  = gain_j * n_j + shift_j                        then the gate's sigmoid or tanh, as before

and backward, from the gradient d_j of a'_j:

    dgain_j  = sum over steps and streams of d_j * n_j;   dshift_j = sum of d_j
    dn       = d_j * gain_j
    da_j     = (dn - mean(dn) - n_j * mean(dn * n_j)) / sqrt(var(a_j) + eps)

reference.py states the same as layer_norm_forward / layer_norm_backward. The gain and shift
are the parameters lw{k} and lb{k} (G*H,), in the cell's gate order. A normalisation reads all H
units of a stream, so it runs in one process (training.unit_split 1; config.py says so).

    norm = GateNorm(gain, shift, blocks, ws, T, B)   # a chunk's buffers, in the workspace ws
    norm.forward_step(t)(a)                          # step t: a (G*H, B) normalised in place
    norm.backward_step(d, t)                         # step t: d (G*H, B) from a'-gradient to a-gradient
    dgain, dshift = norm.grads()                     # after the chunk's backward
"""

import numpy as np

EPS = 1e-5  # PyTorch's nn.LayerNorm default


def blocks_of(a, blocks):
    """a (G*H, B) as a (blocks, H, B) view, never a copy (setting .shape refuses one)."""
    v = a.view()
    v.shape = (blocks, a.shape[0] // blocks, a.shape[1])
    return v


class GateNorm:
    """The normalisation of one layer's gates over a chunk of T steps of B streams (or one step)."""

    def __init__(self, gain, shift, blocks, ws, T, B):
        G, dt = gain.shape[0], gain.dtype
        H = G // blocks
        self.blocks = blocks
        self.gain, self.shift = gain.reshape(blocks, H, 1), shift.reshape(blocks, H, 1)
        get = ws.get if ws is not None else (lambda name, shape, dtype: np.empty(shape, dtype))
        self.N = get("ln_n", (T, blocks, H, B), dt)  # n_t, kept for backward
        self.R = get("ln_r", (T, blocks, 1, B), dt)  # 1 / sqrt(var + eps) of each block and stream
        self._ws, self._shape, self.D = get, (T, blocks, H, B), None
        self.eps = np.array(EPS, dt)

    def forward_step(self, t):
        """The function normalising step t's pre-activation a (G*H, B) in place, keeping n and 1/std."""
        n, r, gain, shift, eps, blocks = self.N[t], self.R[t], self.gain, self.shift, self.eps, self.blocks
        mean, sub, mul, add, sqrt, recip = np.mean, np.subtract, np.multiply, np.add, np.sqrt, np.reciprocal

        def normalise(a):
            a3 = blocks_of(a, blocks)
            mean(a3, 1, keepdims=True, out=r)  # mean over the units
            sub(a3, r, n)
            mul(n, n, a3)  # a as scratch: the squares
            mean(a3, 1, keepdims=True, out=r)  # variance
            add(r, eps, r)
            sqrt(r, r)
            recip(r, r)
            mul(n, r, n)  # n = (a - mean) / std
            mul(n, gain, a3)
            add(a3, shift, a3)  # a' = gain * n + shift

        return normalise

    def backward_step(self, d, t):
        """d (G*H, B): the gradient of step t's a' in, that of its a out (in place)."""
        if self.D is None:  # the chunk's a'-gradients, for the gain's and shift's gradients in grads()
            self.D = self._ws("ln_d", self._shape, self.N.dtype)
            T, blocks, H, B = self._shape
            self._tmp = self._ws("ln_tmp", (blocks, H, B), self.N.dtype)
            self._m1 = self._ws("ln_m1", (blocks, 1, B), self.N.dtype)
            self._m2 = self._ws("ln_m2", (blocks, 1, B), self.N.dtype)
        d3, n, tmp, m1, m2 = blocks_of(d, self.blocks), self.N[t], self._tmp, self._m1, self._m2
        self.D[t] = d3
        d3 *= self.gain  # dn
        np.mean(d3, 1, keepdims=True, out=m1)
        np.multiply(d3, n, out=tmp)
        np.mean(tmp, 1, keepdims=True, out=m2)
        np.multiply(n, m2, out=tmp)
        d3 -= m1
        d3 -= tmp
        d3 *= self.R[t]  # da = (dn - mean(dn) - n mean(dn n)) / std

    def grads(self):
        """(dgain, dshift), each (G*H,): sums over the chunk's steps and streams."""
        D = self.D
        dshift = D.sum(axis=(0, 3))
        np.multiply(D, self.N, out=D)
        dgain = D.sum(axis=(0, 3))
        self.D = None
        return dgain.reshape(-1), dshift.reshape(-1)
