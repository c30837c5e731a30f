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

Layout: vectors are columns. A step's state is (H, B), one column per stream, and its gates are
(G*H, B) = W_hh (G*H, H) @ h (H, B), so every gate block is a contiguous run of rows and each
elementwise pass reads and writes contiguous memory (column-sliced (B, G*H) gates cost 2-4x more
per pass in NumPy). Per-chunk arrays come in two orders:

    time-major     (T, F, B)   step t is the contiguous block [t]: what the time loops read and write
    feature-major  (F, T, B)   as an (F, T*B) matrix: what the weight gradients multiply, in one product

Every cell has one interface, used by the model for every layer:

    HS, state, cache       = cell.forward(xw, state0, Wh, bh, ws, keep=None, team=SOLO)
    dxw, dstate0, dWh, dbh = cell.backward(dhs, dstate, cache)
    advance = cell.stepper(hw, state); advance(xw_t)            # generation: one step in place

`team` (team.py) is the processes sharing the step. In one process (SOLO) every array below holds
all H units and all G*H gate rows. In a team of S, a process holds its H/S units of the state,
of dhs and of its private arrays, its G*H/S rows of xw, dWh and dbh, and reads the full HS, Wh and
dxw (rows in the team's P order), which every process writes its part of.

    xw      (T, G*H, B) time-major: W_ih x_t plus cell.input_bias(bx, bh), for the whole chunk; the
            LSTM and the GRU write their activated gates over it, step by step (it is the cache's)
    state   tuple of (H, B) arrays: (h,) for RNN and GRU, (h, c) for LSTM
    Wh      (G*H, H) the recurrent weight; bh (G*H,) its bias
    HS      (H, T+1, B) feature-major: HS[:, 0] = h_0, HS[:, t+1] = h_t; the outputs are HS[:, 1:]
    dhs     (T, H, B) the loss gradient at each output (any strides)
    dxw     (G*H, T, B) feature-major gradient of xw; dWh (G*H, H), dbh (G*H,)
    keep    None, or (T, 1, B) of 1 and 0: 0 where a stream's state is reset to zero before step t
            (lines mode: an item starts). The reset state is what step t reads (kept in HP, and CP
            for the LSTM: HS[:, t] stays step t-1's output); no gradient flows back through it.

The cache and HS live in the workspace `ws` and are valid until its next forward. Each cell writes
one step's pointwise equations once, in `_gates`, which takes the buffers to write (every view
made there, once) and returns the function xw_t -> that step. forward makes one per step, after
the step's product W_hh h_{t-1}, and keeps every step's buffers for backward. stepper() makes one
for generation, on the product buffer the model fills (together with the next layer's input, see
CharRNN.step; the sigmoid gates' rows come halved) and the state it updates in place, so a batch-1
step costs only its NumPy calls. There every output is passed positionally, np.add(a, b, out):
NumPy takes that faster than out= (docs/performance.md has the measurements behind this file).
Every product of a training step, here and in model.py, is an np.matmul call, never @ (`python
benchmarks/bench.py --breakdown` times them by wrapping np.matmul). The LSTM keeps its gate
blocks as (i, f, o, g) so the three sigmoids are one pass; `torch_blocks` maps them to PyTorch's.
The LSTM's gates may be layer-normalised (model.layer_norm): layernorm.py, a step in `_gates`.
"""

import numpy as np

from ..parallel.solo import SOLO
from .buffers import as_matrix, hidden_buffer, recurrent_weight_grad, reset, rowsum


_HALF = {np.dtype(t): np.array(0.5, dtype=t) for t in (np.float32, np.float64)}
_ONE = {np.dtype(t): np.array(1.0, dtype=t) for t in (np.float32, np.float64)}

# The step closures below compute the sigmoid gates with their calls written out in place: in
# training as 1 / (1 + exp(-x)) (NumPy's float32 exp costs about two thirds of its tanh per element on
# the AVX2 machines measured, docs/performance.md), in generation as (1 + tanh(x / 2)) / 2 over rows
# that come halved (see Cell.stepper), one tanh pass for every gate, the fewest calls at batch 1.
# They call the ufuncs through names bound when the closure is made: a helper function and
# np.<name> lookups cost a noticeable share of a batch-1 step.


class Cell:
    """The interface shared by RNN, LSTM and GRU (see the module docstring)."""

    name = ""
    gates = 1  # G: blocks of H rows in weight_ih / weight_hh
    sigmoid_gates = 0  # how many of the leading blocks go through a sigmoid
    state_names = ("h",)
    torch_blocks = (0,)  # internal block j holds PyTorch's block torch_blocks[j]

    def input_bias(self, bx, bh):
        """The bias folded into xw once per chunk (both biases, except where the cell needs bh apart)."""
        return bx + bh

    def recurrent_bias(self, bh):
        """The part of bh that input_bias leaves out: it belongs with W_hh h_{t-1} (zero but for the GRU)."""
        return np.zeros_like(bh)

    def forward(self, xw, state0, Wh, bh, ws, keep=None):
        raise NotImplementedError

    def backward(self, dhs, dstate, cache):
        raise NotImplementedError

    def activations(self, cache):
        """{name: (H, T, B) view} of the states a forward pass went through: h (and c for the LSTM)."""
        return {"h": cache[0][:, 1:]}

    def stepper(self, hw, state):
        """advance(xw_t): one generation step from the input term xw_t (G*H, B), updating `state` in place.

        hw (G*H, B) is the buffer that will hold W_hh h_{t-1} + recurrent_bias(bh) at each call;
        scratch is made here. The sigmoid gates' rows of hw and xw_t arrive halved: the caller
        stores those weight rows times 0.5 (exact in floating point), which is the x / 2 of
        sigma(x) = (1 + tanh(x / 2)) / 2, so the step saves that pass.
        """
        raise NotImplementedError


class RNNCell(Cell):
    name = "rnn"
    gates = 1
    state_names = ("h",)
    torch_blocks = (0,)

    def forward(self, xw, state0, Wh, bh, ws, keep=None, team=SOLO):
        T, u = xw.shape[0], team.units
        HS = hidden_buffer(state0[0], Wh.shape[1], T, ws, team)
        HP = None if keep is None else ws.get("HP", HS[:, 1:].shape, HS.dtype)  # h_{t-1} as read, after resets
        W = team.rows(Wh, self.gates)  # this process's rows (all of them in one process)
        for t in range(T):
            h_out = HS[u, t + 1]
            h_prev = HS[:, t] if keep is None else reset(HS[:, t], keep[t], HP[:, t])
            np.matmul(W, h_prev, out=h_out)
            self._gates(h_out, h_out)(xw[t])
            team.sync()  # h_t complete: every process's units
        return HS, (HS[u, T].copy(),), (HS, Wh, ws, keep, HP, team)

    def backward(self, dhs, dstate, cache):
        HS, Wh, ws, keep, HP, team = cache
        H, T, B = HS.shape[0], HS.shape[1] - 1, HS.shape[2]
        u, own, dt = team.units, team.own(H), HS.dtype
        dA = team.buffer(ws, "dA", (H, T, B), dt)  # feature-major, for the weight gradient (rows in P order)
        DA = team.buffer(ws, "da", (2, H, B), dt)  # step t's da in DA[t % 2]: a peer may still read the other
        dh = ws.get("dh", dstate[0].shape, dt)
        WhT = team.transposed(Wh, self.gates, ws, "WhT")
        np.copyto(dh, dstate[0])
        for t in range(T - 1, -1, -1):
            da_all = DA[t & 1]
            da, h = da_all[own], HS[u, t + 1]
            dh += dhs[t]
            # backprop through tanh: da = dh * (1 - h^2)
            np.multiply(h, h, out=da)
            np.subtract(1.0, da, out=da)
            da *= dh
            team.arrive()  # da_t complete
            dA[own, t] = da  # (while a later process finishes its rows)
            team.wait()
            np.matmul(WhT, da_all, out=dh)  # dh_{t-1} (H, B)
            if keep is not None:
                dh *= keep[t]  # nothing flows back through a reset
        dA_own = dA[own]
        dWh = recurrent_weight_grad(dA_own, HS if keep is None else HP)
        return dA, (dh.copy(),), dWh, rowsum(as_matrix(dA_own))

    def stepper(self, hw, state):
        return self._gates(hw, state[0])

    @staticmethod
    def _gates(hw, h_out):
        """xw_t -> h_t = tanh(W_hh h_{t-1} + xw_t) into h_out (H, B); hw holds W_hh h_{t-1} (may be h_out)."""

        add, tanh = np.add, np.tanh

        def gates(xw_t):
            add(hw, xw_t, h_out)
            tanh(h_out, h_out)

        return gates


class LSTMCell(Cell):
    name = "lstm"
    gates = 4
    sigmoid_gates = 3
    state_names = ("h", "c")
    torch_blocks = (0, 1, 3, 2)  # internal (i, f, o, g) <- PyTorch (i, f, g, o)

    def forward(self, xw, state0, Wh, bh, ws, keep=None, team=SOLO, norm=None):
        T, G, B = xw.shape  # G: this process's gate rows (all 4H of them in one process)
        assert norm is None or team.size == 1  # norm: a layernorm.GateNorm, which reads every unit
        H, u = G // 4, team.units
        h0, c0 = state0
        dt = xw.dtype
        HS = hidden_buffer(h0, Wh.shape[1], T, ws, team)
        # The activated gates i f o g go into xw itself: each step reads its input term once, then
        # writes its gates in its place. So a step touches one block of the chunk's memory, not two
        # (its input term, and a second buffer's block for the gates), and the chunk needs no second
        # buffer of this size, its largest (docs/bench-log.md).
        A = xw
        hw = ws.get("hw", (G, B), dt)  # W_hh h_{t-1}, one step at a time
        C = ws.get("C", (T + 1, H, B), dt)  # C[0] = c_0, C[t+1] = c_t
        TC = ws.get("TC", (T, H, B), dt)  # tanh(c_t)
        C[0] = c0
        HP = CP = None
        if keep is not None:  # the states as read, after resets
            HP, CP = ws.get("HP", (Wh.shape[1], T, B), dt), ws.get("CP", (T, H, B), dt)
        W = team.rows(Wh, self.gates)
        with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -88: sigma(x) = 0, as it should
            for t in range(T):  # keep every intermediate for backward
                h_prev, c_prev = (HS[:, t], C[t]) if keep is None else \
                    (reset(HS[:, t], keep[t], HP[:, t]), reset(C[t], keep[t], CP[t]))
                np.matmul(W, h_prev, out=hw)  # (4H, B)
                self._gates(hw, c_prev, A[t], C[t + 1], TC[t], HS[u, t + 1],
                            norm=norm and norm.forward_step(t))(xw[t])
                team.sync()  # h_t complete: every process's units
        return HS, (HS[u, T].copy(), C[T].copy()), (HS, A, C, TC, Wh, ws, keep, HP, CP, team, norm)

    def backward(self, dhs, dstate, cache):
        HS, A, C, TC, Wh, ws, keep, HP, CP, team, norm = cache
        T, G, B = A.shape
        H, own, dt = G // 4, team.own(Wh.shape[0]), A.dtype
        dA = team.buffer(ws, "dA", (Wh.shape[0], T, B), dt)  # feature-major, for the weight gradient (P order)
        DA = team.buffer(ws, "da", (2, Wh.shape[0], B), dt)  # step t's da in DA[t % 2]: a peer may read the other
        dh = ws.get("dh", (H, B), dt)
        dc = ws.get("dc", (H, B), dt)
        tmp = ws.get("tmp", (H, B), dt)
        dsig = ws.get("dsig", (3 * H, B), dt)
        WhT = team.transposed(Wh, self.gates, ws, "WhT")
        np.copyto(dh, dstate[0])
        np.copyto(dc, dstate[1])
        for t in range(T - 1, -1, -1):
            da_all = DA[t & 1]
            da = da_all[own]
            dai, daf, dao, dag = da[:H], da[H : 2 * H], da[2 * H : 3 * H], da[3 * H :]
            a, tc, c_prev = A[t], TC[t], (C[t] if keep is None else CP[t])
            i, f, o, g = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
            dh += dhs[t]
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
            np.subtract(1.0, a[: 3 * H], out=dsig)  # backprop through the sigmoids: s (1 - s)
            dsig *= a[: 3 * H]
            da[: 3 * H] *= dsig
            np.multiply(g, g, out=tmp)  # backprop through tanh(g)
            np.subtract(1.0, tmp, out=tmp)
            np.multiply(dc, i, out=dag)
            dag *= tmp
            dc *= f  # dc_{t-1}
            if norm is not None:
                norm.backward_step(da, t)  # through the gates' normalisation (layernorm.py)
            team.arrive()  # da_t complete
            dA[own, t] = da  # (while a later process finishes its rows)
            team.wait()
            np.matmul(WhT, da_all, out=dh)  # dh_{t-1} (H, B)
            if keep is not None:
                dh *= keep[t]  # nothing flows back through a reset
                dc *= keep[t]
        dA_own = dA[own]
        dWh = recurrent_weight_grad(dA_own, HS if keep is None else HP)
        return dA, (dh.copy(), dc.copy()), dWh, rowsum(as_matrix(dA_own))

    def activations(self, cache):
        HS, _, C = cache[:3]  # one process's
        return {"h": HS[:, 1:], "c": C[1:].transpose(1, 0, 2)}

    def stepper(self, hw, state, norm=None):
        """norm: a GateNorm for one step (layernorm.py); its rows come whole, not halved."""
        h, c = state
        return self._gates(hw, c, hw, c, np.empty_like(c), h, halved=norm is None, norm=norm and norm.forward_step(0))

    @staticmethod
    def _gates(hw, c, a, c_out, tc_out, h_out, halved=False, norm=None):
        """xw_t -> gates of W_hh h_{t-1} (hw) + xw_t into a (4H, B), c_t into c_out, tanh(c_t) into tc_out, h_t into h_out.

        hw may be a, a may be xw_t (each is read before it is written); c_out may be c. halved: the i, f,
        o rows of hw and xw_t hold half their values. norm: a function normalising the sum in place.
        """
        H = c.shape[0]
        ifo, g = a[: 3 * H], a[3 * H :]
        i, f, o = a[:H], a[H : 2 * H], a[2 * H : 3 * H]

        add, mul, tanh, half = np.add, np.multiply, np.tanh, _HALF.get(a.dtype, 0.5)
        neg, exp, recip, one = np.negative, np.exp, np.reciprocal, _ONE.get(a.dtype, 1.0)

        def gates(xw_t):
            add(hw, xw_t, a)
            if norm is not None:
                norm(a)
            if halved:  # generation: one tanh pass for all four blocks costs the fewest calls
                tanh(a, a)  # tanh(x / 2) for i, f, o and tanh(x) for g
                mul(ifo, half, ifo)  # i, f, o = (1 + tanh(x / 2)) / 2
                add(ifo, half, ifo)
            else:  # training: sigma(x) = 1 / (1 + exp(-x)); exp costs less than tanh per element
                neg(ifo, ifo)
                exp(ifo, ifo)  # inf for x < -88 gives sigma = 0 (the forward runs with overflow ignored)
                add(ifo, one, ifo)
                recip(ifo, ifo)
                tanh(g, g)
            mul(f, c, c_out)
            mul(i, g, tc_out)  # tc_out as scratch for i * g
            add(c_out, tc_out, c_out)
            tanh(c_out, tc_out)
            mul(o, tc_out, h_out)

        return gates


class GRUCell(Cell):
    name = "gru"
    gates = 3
    sigmoid_gates = 2
    state_names = ("h",)
    torch_blocks = (0, 1, 2)  # r, z, n

    def input_bias(self, bx, bh):
        # b_hn sits inside r * (W_hn h + b_hn), so only b_hr and b_hz fold into the input side
        b = bx.copy()
        H = b.shape[0] // 3
        b[: 2 * H] += bh[: 2 * H]
        return b

    def recurrent_bias(self, bh):
        b = np.zeros_like(bh)
        H = b.shape[0] // 3
        b[2 * H :] = bh[2 * H :]
        return b

    def forward(self, xw, state0, Wh, bh, ws, keep=None, team=SOLO):
        T, G, B = xw.shape  # G: this process's gate rows (all 3H of them in one process)
        H, u = G // 3, team.units
        dt = xw.dtype
        HS = hidden_buffer(state0[0], Wh.shape[1], T, ws, team)
        A = xw  # the activated r, z, n take the input term's place, as in the LSTM
        HN = ws.get("HN", (T, H, B), dt)  # W_hn h_{t-1} + b_hn
        hw = ws.get("hw", (G, B), dt)
        rhn = ws.get("rhn", (H, B), dt)  # r * (W_hn h_{t-1} + b_hn), one step at a time
        HP = None if keep is None else ws.get("HP", (Wh.shape[1], T, B), dt)  # h_{t-1} as read, after resets
        bhn = team.rows(bh, self.gates)[2 * H :, None]
        W = team.rows(Wh, self.gates)
        with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -88: sigma(x) = 0, as it should
            for t in range(T):  # keep every intermediate for backward
                h_prev = HS[:, t] if keep is None else reset(HS[:, t], keep[t], HP[:, t])
                np.matmul(W, h_prev, out=hw)  # (3H, B)
                self._gates(hw, h_prev[u], bhn, A[t], HN[t], HS[u, t + 1], rhn)(xw[t])
                team.sync()  # h_t complete: every process's units
        return HS, (HS[u, T].copy(),), (HS, A, HN, Wh, ws, keep, HP, team)

    def backward(self, dhs, dstate, cache):
        HS, A, HN, Wh, ws, keep, HP, team = cache
        PREV = HS if keep is None else HP  # h_{t-1} as read
        T, G, B = A.shape
        H, u, own, dt = G // 3, team.units, team.own(Wh.shape[0]), A.dtype
        dX = team.buffer(ws, "dX", (Wh.shape[0], T, B), dt)  # feature-major gradient of the input-side pre-activations (P order)
        DHW = team.buffer(ws, "dhw", (2, Wh.shape[0], B), dt)  # step t's gradient of W_hh h + b_hh in DHW[t % 2]
        dHN = ws.get("dHN", (H, T, B), dt)  # feature-major gradient of W_hn h + b_hn
        dan = ws.get("dan", (H, B), dt)  # one step's gradient of the n pre-activation
        dh = ws.get("dh", (H, B), dt)
        tmp = ws.get("tmp", (H, B), dt)
        dsig = ws.get("dsig", (2 * H, B), dt)
        WhT = team.transposed(Wh, self.gates, ws, "WhT")
        dXo = dX[own]
        np.copyto(dh, dstate[0])
        for t in range(T - 1, -1, -1):
            dhw_all = DHW[t & 1]
            dhw = dhw_all[own]  # one step's d r, d z, d hn
            dar, daz, dhn = dhw[:H], dhw[H : 2 * H], dhw[2 * H :]
            a = A[t]
            r, z, n = a[:H], a[H : 2 * H], a[2 * H :]
            dh += dhs[t]
            np.subtract(PREV[u, t], n, out=daz)  # d z = dh * (h_{t-1} - n)
            daz *= dh
            np.subtract(1.0, z, out=dan)  # d n = dh * (1 - z)
            dan *= dh
            np.multiply(n, n, out=tmp)  # backprop through tanh(n)
            np.subtract(1.0, tmp, out=tmp)
            dan *= tmp
            np.multiply(dan, HN[t], out=dar)  # d r = dan * (W_hn h + b_hn)
            np.subtract(1.0, a[: 2 * H], out=dsig)  # backprop through the sigmoids
            dsig *= a[: 2 * H]
            dhw[: 2 * H] *= dsig
            np.multiply(dan, r, out=dhn)  # d hn = dan * r
            dh *= z  # the direct path z * h_{t-1}
            team.arrive()  # the step's d r, d z, d hn complete
            dXo[: 2 * H, t] = dhw[: 2 * H]  # (while a later process finishes its rows)
            dXo[2 * H :, t] = dan
            dHN[:, t] = dhn
            team.wait()
            dh += np.matmul(WhT, dhw_all, out=tmp)  # dh_{t-1} (H, B)
            if keep is not None:
                dh *= keep[t]  # nothing flows back through a reset
        dWh = np.empty((G, Wh.shape[1]), dt)
        recurrent_weight_grad(dXo[: 2 * H], PREV, out=dWh[: 2 * H])
        recurrent_weight_grad(dHN, PREV, out=dWh[2 * H :])
        dbh = np.concatenate([rowsum(as_matrix(dXo[: 2 * H])), rowsum(as_matrix(dHN))])
        return dX, (dh.copy(),), dWh, dbh

    def stepper(self, hw, state):
        h = state[0]
        H = h.shape[0]
        return self._gates(hw, h, None, np.empty_like(hw), hw[2 * H :], h, np.empty_like(h), halved=True)  # hw's n rows hold W_hn h + b_hn

    @staticmethod
    def _gates(hw, h, bhn, a, hn, h_out, rhn, halved=False):
        """xw_t -> gates of hw = W_hh h_{t-1} (3H, B) and xw_t into a, W_hn h + b_hn into hn, h_t into h_out (may be h).

        a may be xw_t; rhn (H, B) is scratch. bhn None: hw's n rows already hold W_hn h + b_hn and
        hn is that view. halved: the r, z rows of hw and xw_t hold half their values.
        """
        H = h.shape[0]
        hw_rz, hw_n = hw[: 2 * H], hw[2 * H :]
        rz, r, z, n = a[: 2 * H], a[:H], a[H : 2 * H], a[2 * H :]

        add, mul, sub, tanh, half = np.add, np.multiply, np.subtract, np.tanh, _HALF.get(a.dtype, 0.5)
        neg, exp, recip, one = np.negative, np.exp, np.reciprocal, _ONE.get(a.dtype, 1.0)

        def gates(xw_t):
            add(hw_rz, xw_t[: 2 * H], rz)
            if halved:  # generation: r, z = (1 + tanh(x / 2)) / 2, the rows came halved
                tanh(rz, rz)
                mul(rz, half, rz)
                add(rz, half, rz)
            else:  # training: sigma(x) = 1 / (1 + exp(-x)), as the LSTM's
                neg(rz, rz)
                exp(rz, rz)
                add(rz, one, rz)
                recip(rz, rz)
            if bhn is not None:
                add(hw_n, bhn, hn)
            mul(r, hn, rhn)
            add(rhn, xw_t[2 * H :], n)  # n may be xw_t's n rows: read them before writing
            tanh(n, n)
            sub(h, n, h_out)  # h_t = n + z * (h_{t-1} - n)
            mul(h_out, z, h_out)
            add(h_out, n, h_out)

        return gates


CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


def make_cell(name):
    """make_cell("lstm").gates == 4"""
    try:
        return CELLS[name]()
    except KeyError:
        raise ValueError(f"unknown model type {name!r}: choose one of {', '.join(CELLS)}") from None
