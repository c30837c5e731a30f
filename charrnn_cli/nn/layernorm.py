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
        get = ws.get if ws is not None else (lambda name, shape, dtype: np.empty(shape, dtype))
        # NumPy broadcasts along a short last axis slowly (a (blocks, H, 1) or (blocks, 1, B) operand
        # costs 2-3x a full one), so the gain and shift are spread over the streams once a chunk and
        # each per-stream statistic over the units (E) before it is used
        self.gain = get("ln_gain", (blocks, H, B), dt)
        self.shift = get("ln_shift", (blocks, H, B), dt)
        np.copyto(self.gain, gain.reshape(blocks, H, 1))
        np.copyto(self.shift, shift.reshape(blocks, H, 1))
        self.E = get("ln_e", (blocks, H, B), dt)
        self.N = get("ln_n", (T, blocks, H, B), dt)  # n_t, kept for backward
        self.R = get("ln_r", (T, blocks, 1, B), dt)  # 1 / sqrt(var + eps) of each block and stream
        self._ws, self._shape, self.D = get, (T, blocks, H, B), None
        self.eps = np.array(EPS, dt)
        # a mean over the units as one product, (1, H) @ (blocks, H, B): ten times np.mean's speed on
        # the middle axis of a (blocks, H, B) array
        self.avg = np.full((1, H), 1.0 / H, dt)

    def forward_step(self, t):
        """The function normalising step t's pre-activation a (G*H, B) in place, keeping n and 1/std."""
        n, r, E, gain, shift, eps, blocks = self.N[t], self.R[t], self.E, self.gain, self.shift, self.eps, self.blocks
        avg, sub, mul, add, sqrt, recip = self.avg, np.subtract, np.multiply, np.add, np.sqrt, np.reciprocal
        matmul, spread = np.matmul, np.copyto

        def normalise(a):
            a3 = blocks_of(a, blocks)
            matmul(avg, a3, r)  # mean over the units
            spread(E, r)
            sub(a3, E, n)
            mul(n, n, a3)  # a as scratch: the squares
            matmul(avg, a3, r)  # variance
            add(r, eps, r)
            sqrt(r, r)
            recip(r, r)
            spread(E, r)
            mul(n, E, n)  # n = (a - mean) / std
            mul(n, gain, a3)
            add(a3, shift, a3)  # a' = gain * n + shift

        return normalise

    def backward_step(self, d, t):
        """d (G*H, B): the gradient of step t's a' in, that of its a out (in place)."""
        if self.D is None:  # the chunk's a'-gradients, for the gain's and shift's gradients in grads()
            self.D = self._ws("ln_d", self._shape, self.N.dtype)
            T, blocks, H, B = self._shape
            self._tmp = self._ws("ln_tmp", (blocks, H, B), self.N.dtype)
            self._m = self._ws("ln_m", (blocks, 1, B), self.N.dtype)
        d3, n, tmp, m, E = blocks_of(d, self.blocks), self.N[t], self._tmp, self._m, self.E
        self.D[t] = d3
        d3 *= self.gain  # dn
        np.multiply(d3, n, out=tmp)
        np.matmul(self.avg, tmp, out=m)  # mean(dn n)
        np.copyto(E, m)
        np.multiply(n, E, out=tmp)
        d3 -= tmp
        np.matmul(self.avg, d3, out=m)  # mean(dn - n mean(dn n)) = mean(dn): n has mean 0 over the units
        np.copyto(E, m)
        d3 -= E
        np.copyto(E, self.R[t])
        d3 *= E  # da = (dn - mean(dn) - n mean(dn n)) / std

    def grads(self):
        """(dgain, dshift), each (G*H,): sums over the chunk's steps and streams."""
        D = self.D
        dshift = D.sum(axis=(0, 3))
        np.multiply(D, self.N, out=D)
        dgain = D.sum(axis=(0, 3))
        self.D = None
        return dgain.reshape(-1), dshift.reshape(-1)
