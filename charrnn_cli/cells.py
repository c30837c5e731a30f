"""Recurrent cells: vanilla RNN, LSTM and GRU, forward and backward through time.

The equations are PyTorch's (nn.RNN, nn.LSTM, nn.GRU documentation):

    RNN   h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

    LSTM  i = sigma(.), f = sigma(.), g = tanh(.), o = sigma(.)   of W_i* x_t + b_i* + W_h* h_{t-1} + b_h*
          c_t = f * c_{t-1} + i * g
          h_t = o * tanh(c_t)

    GRU   r = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
          z = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
          n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))
          h_t = (1 - z) * n + z * h_{t-1}

Every cell has one interface, used by the model for every layer:

    hs, state, cache      = cell.forward(xw, state0, Wh, bh, ws)
    dxw, dstate0, dWh, dbh = cell.backward(dhs, dstate, cache)
    cell.step(xw_t, state, Wh, bh, scratch, out)               # one step, no cache: generation

    xw     (T, B, G*H) input contribution of the whole chunk, W_ih x_t plus cell.input_bias(bx, bh);
           the model computes it in one row lookup (layer 0) or one matrix product (higher layers)
    state  tuple of (B, H) arrays: (h,) for RNN and GRU, (h, c) for LSTM
    Wh     (H, G*H) the transposed recurrent weight; bh (G*H,) the recurrent bias
    hs     (T, B, H) hidden state at every step; cache is valid until the next forward on `ws`

Each cell writes one step's equations once, in `_cell`, into buffers it is given: forward keeps
every step's buffers for backward, step() reuses scratch. Internal gate blocks are laid out for
speed: the LSTM keeps (i, f, o, g) so its three sigmoids are one contiguous pass; `torch_blocks` maps them back to PyTorch's (i, f, g, o).
The loops are written for NumPy: one matrix product per step into a preallocated buffer,
elementwise work with out=, weight gradients as one large product per chunk.
"""

import numpy as np


class Workspace:
    """Scratch buffers reused across calls, so the time loops allocate nothing per step.

    >>> ws = Workspace(); a = ws.get("A", (2, 3), np.float32); np.shares_memory(a, ws.get("A", (3, 2), np.float32))
    True
    """

    def __init__(self):
        self._bufs = {}

    def get(self, name, shape, dtype):
        n = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = np.empty(max(n, 1), dtype=dtype)
            self._bufs[name] = buf
        return buf[:n].reshape(shape)


def colsum(x):
    """Sum over the rows of a 2-D array as one BLAS product. colsum(np.ones((3, 2))).tolist() == [3.0, 3.0]"""
    return np.ones(x.shape[0], dtype=x.dtype) @ x


def sigmoid(x, out):
    """sigma(x) = (1 + tanh(x / 2)) / 2: one transcendental pass and no overflow. sigmoid(0) == 0.5"""
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def _recurrent_weight_grad(h0, hs, dA):
    """dWh = sum_t h_{t-1}^T dA_t as two large products (no per-step work, no concatenation)."""
    T, B, H = hs.shape
    dWh = h0.T @ dA[0]  # (H, G)
    if T > 1:
        dWh += hs[:-1].reshape(-1, H).T @ dA[1:].reshape(-1, dA.shape[2])
    return dWh


class Cell:
    """The interface shared by RNN, LSTM and GRU (see the module docstring)."""

    name = ""
    gates = 1  # G: blocks of H rows in weight_ih / weight_hh
    state_names = ("h",)
    torch_blocks = (0,)  # internal block j holds PyTorch's block torch_blocks[j]

    def input_bias(self, bx, bh):
        """The bias folded into xw once per chunk (both biases, except where the cell needs bh apart)."""
        return bx + bh

    def forward(self, xw, state0, Wh, bh, ws):
        raise NotImplementedError

    def backward(self, dhs, dstate, cache):
        raise NotImplementedError

    def step(self, xw, state, Wh, bh, scratch, out):
        """One time step for generation: xw (B, G*H) -> the new state written into `out`.

        `scratch` is a (B, 2*G*H) buffer; `out` arrays must not share memory with `state`.
        """
        raise NotImplementedError


class RNNCell(Cell):
    name = "rnn"
    gates = 1
    state_names = ("h",)
    torch_blocks = (0,)

    def forward(self, xw, state0, Wh, bh, ws):
        T, B, H = xw.shape
        (h0,) = state0
        hs = ws.get("H", (T, B, H), xw.dtype)
        h = h0
        for t in range(T):
            self._cell(xw[t], h, Wh, hs[t])
            h = hs[t]
        return hs, (hs[-1].copy(),), (h0, hs, Wh, ws)

    def backward(self, dhs, dstate, cache):
        h0, hs, Wh, ws = cache
        T, B, H = hs.shape
        WhT = np.ascontiguousarray(Wh.T)  # (G*H, H): contiguous makes the per-step products faster
        dA = ws.get("dA", (T, B, H), hs.dtype)
        tmp = ws.get("tmp", (B, H), hs.dtype)
        dh_next = dstate[0]
        for t in range(T - 1, -1, -1):
            da = dA[t]
            np.add(dhs[t], dh_next, out=da)
            # backprop through tanh: da = dh * (1 - h^2)
            np.multiply(hs[t], hs[t], out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            da *= tmp
            dh_next = da @ WhT  # (B, H)
        dWh = _recurrent_weight_grad(h0, hs, dA)
        dbh = colsum(dA.reshape(-1, H))
        return dA, (dh_next,), dWh, dbh

    def step(self, xw, state, Wh, bh, scratch, out):
        self._cell(xw, state[0], Wh, out[0])

    @staticmethod
    def _cell(xw_t, h, Wh, h_out):
        """One step: h_t = tanh(xw_t + h W_hh^T) into h_out (B, H)."""
        np.matmul(h, Wh, out=h_out)
        h_out += xw_t
        np.tanh(h_out, out=h_out)


class LSTMCell(Cell):
    name = "lstm"
    gates = 4
    state_names = ("h", "c")
    torch_blocks = (0, 1, 3, 2)  # internal (i, f, o, g) <- PyTorch (i, f, g, o)

    def forward(self, xw, state0, Wh, bh, ws):
        T, B, G = xw.shape
        H = G // 4
        h0, c0 = state0
        A = ws.get("A", (T, B, G), xw.dtype)  # activated gates i f o g
        cs = ws.get("C", (T, B, H), xw.dtype)
        tcs = ws.get("TC", (T, B, H), xw.dtype)  # tanh(c_t)
        hs = ws.get("H", (T, B, H), xw.dtype)
        h, c = h0, c0
        for t in range(T):  # keep every intermediate for backward
            self._cell(xw[t], h, c, Wh, A[t], cs[t], tcs[t], hs[t])
            h, c = hs[t], cs[t]
        state = (hs[-1].copy(), cs[-1].copy())
        return hs, state, (h0, c0, A, cs, tcs, hs, Wh, ws)

    def backward(self, dhs, dstate, cache):
        h0, c0, A, cs, tcs, hs, Wh, ws = cache
        T, B, H = hs.shape
        G = 4 * H
        WhT = np.ascontiguousarray(Wh.T)  # (G*H, H): contiguous makes the per-step products faster
        dt = hs.dtype
        dA = ws.get("dA", (T, B, G), dt)
        dh = ws.get("dh", (B, H), dt)
        dc = ws.get("dc", (B, H), dt)
        tmp = ws.get("tmp", (B, H), dt)
        dsig = ws.get("dsig", (B, 3 * H), dt)
        dh_next = dstate[0]
        np.copyto(dc, dstate[1])
        for t in range(T - 1, -1, -1):
            a = A[t]
            i, f, o, g = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            c_prev = cs[t - 1] if t > 0 else c0
            tc = tcs[t]
            da = dA[t]
            dai, daf, dao, dag = da[:, :H], da[:, H : 2 * H], da[:, 2 * H : 3 * H], da[:, 3 * H :]
            np.add(dhs[t], dh_next, out=dh)
            # backprop through h = o * tanh(c): dc += dh * o * (1 - tanh(c)^2)
            np.multiply(tc, tc, out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            tmp *= o
            tmp *= dh
            dc += tmp
            # gate gradients before their nonlinearities
            np.multiply(dh, tc, out=dao)  # d o
            np.multiply(dc, g, out=dai)  # d i
            np.multiply(dc, c_prev, out=daf)  # d f
            np.subtract(1.0, a[:, : 3 * H], out=dsig)  # backprop through the sigmoids: s (1 - s)
            dsig *= a[:, : 3 * H]
            da[:, : 3 * H] *= dsig
            np.multiply(g, g, out=tmp)  # backprop through tanh(g)
            np.subtract(1.0, tmp, out=tmp)
            np.multiply(dc, i, out=dag)
            dag *= tmp
            dc *= f  # dc_{t-1}
            dh_next = da @ WhT  # (B, H)
        dWh = _recurrent_weight_grad(h0, hs, dA)
        dbh = colsum(dA.reshape(-1, G))
        return dA, (dh_next, dc.copy()), dWh, dbh

    def step(self, xw, state, Wh, bh, scratch, out):
        G = xw.shape[1]
        self._cell(xw, state[0], state[1], Wh, scratch[:, :G], out[1], scratch[:, G : G + G // 4], out[0])

    @staticmethod
    def _cell(xw_t, h, c, Wh, a, c_out, tc_out, h_out):
        """One step: gates into a (B, 4H), c_t into c_out, tanh(c_t) into tc_out, h_t into h_out."""
        H = h_out.shape[1]
        np.matmul(h, Wh, out=a)  # (B, 4H)
        a += xw_t
        sigmoid(a[:, : 3 * H], out=a[:, : 3 * H])  # i, f, o in one pass
        np.tanh(a[:, 3 * H :], out=a[:, 3 * H :])  # g
        i, f, o, g = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        np.multiply(f, c, out=c_out)
        np.multiply(i, g, out=h_out)  # h_out as scratch for i * g
        c_out += h_out
        np.tanh(c_out, out=tc_out)
        np.multiply(o, tc_out, out=h_out)


class GRUCell(Cell):
    name = "gru"
    gates = 3
    state_names = ("h",)
    torch_blocks = (0, 1, 2)  # r, z, n

    def input_bias(self, bx, bh):
        # b_hn sits inside r * (W_hn h + b_hn), so only b_hr and b_hz fold into the input side
        b = bx.copy()
        H = b.shape[0] // 3
        b[: 2 * H] += bh[: 2 * H]
        return b

    def forward(self, xw, state0, Wh, bh, ws):
        T, B, G = xw.shape
        H = G // 3
        (h0,) = state0
        dt = xw.dtype
        A = ws.get("A", (T, B, G), dt)  # activated r, z, n
        HN = ws.get("HN", (T, B, H), dt)  # W_hn h_{t-1} + b_hn
        hs = ws.get("H", (T, B, H), dt)
        hw = ws.get("hw", (B, G), dt)
        h = h0
        for t in range(T):  # keep every intermediate for backward
            self._cell(xw[t], h, Wh, bh[2 * H :], hw, A[t], HN[t], hs[t])
            h = hs[t]
        return hs, (hs[-1].copy(),), (h0, A, HN, hs, Wh, ws)

    def backward(self, dhs, dstate, cache):
        h0, A, HN, hs, Wh, ws = cache
        T, B, H = hs.shape
        G = 3 * H
        WhT = np.ascontiguousarray(Wh.T)  # (G*H, H): contiguous makes the per-step products faster
        dt = hs.dtype
        dX = ws.get("dX", (T, B, G), dt)  # gradient of the input-side pre-activations
        dHW = ws.get("dHW", (T, B, G), dt)  # gradient of W_hh h + b_hh
        dh = ws.get("dh", (B, H), dt)
        tmp = ws.get("tmp", (B, H), dt)
        dsig = ws.get("dsig", (B, 2 * H), dt)
        dh_next = dstate[0]
        for t in range(T - 1, -1, -1):
            a = A[t]
            r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            h_prev = hs[t - 1] if t > 0 else h0
            dx, dhw = dX[t], dHW[t]
            dar, daz, dan = dx[:, :H], dx[:, H : 2 * H], dx[:, 2 * H :]
            np.add(dhs[t], dh_next, out=dh)
            np.subtract(h_prev, n, out=daz)  # d z = dh * (h_{t-1} - n)
            daz *= dh
            np.subtract(1.0, z, out=dan)  # d n = dh * (1 - z)
            dan *= dh
            np.multiply(n, n, out=tmp)  # backprop through tanh(n)
            np.subtract(1.0, tmp, out=tmp)
            dan *= tmp
            np.multiply(dan, HN[t], out=dar)  # d r = dan * (W_hn h + b_hn)
            np.subtract(1.0, a[:, : 2 * H], out=dsig)  # backprop through the sigmoids
            dsig *= a[:, : 2 * H]
            dx[:, : 2 * H] *= dsig
            dhw[:, : 2 * H] = dx[:, : 2 * H]
            np.multiply(dan, r, out=dhw[:, 2 * H :])
            dh_prev = dhw @ WhT  # (B, H)
            np.multiply(dh, z, out=tmp)
            dh_prev += tmp
            dh_next = dh_prev
        dWh = _recurrent_weight_grad(h0, hs, dHW)
        dbh = colsum(dHW.reshape(-1, G))
        return dX, (dh_next,), dWh, dbh

    def step(self, xw, state, Wh, bh, scratch, out):
        G = xw.shape[1]
        hw = scratch[:, :G]
        self._cell(xw, state[0], Wh, bh[2 * G // 3 :], hw, scratch[:, G:], hw[:, 2 * G // 3 :], out[0])

    @staticmethod
    def _cell(xw_t, h, Wh, bhn, hw, a, hn, h_out):
        """One step: W_hh h into hw (B, 3H), gates into a, W_hn h + b_hn into hn, h_t into h_out."""
        H = h_out.shape[1]
        np.matmul(h, Wh, out=hw)  # (B, 3H)
        np.add(hw[:, : 2 * H], xw_t[:, : 2 * H], out=a[:, : 2 * H])
        sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])  # r, z
        r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        np.add(hw[:, 2 * H :], bhn, out=hn)
        np.multiply(r, hn, out=n)
        n += xw_t[:, 2 * H :]
        np.tanh(n, out=n)
        np.subtract(h, n, out=h_out)  # h_t = n + z * (h_{t-1} - n)
        h_out *= z
        h_out += n


CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


def make_cell(name):
    """make_cell("lstm").gates == 4"""
    try:
        return CELLS[name]()
    except KeyError:
        raise ValueError(f"unknown model type {name!r}: choose one of {', '.join(CELLS)}") from None
