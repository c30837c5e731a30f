"""The character model: a stack of recurrent layers and a linear decoder, forward and backward.

    x_0   = one-hot(idx)                    input of layer 0 (done as a column lookup of W_ih)
          or E[idx]                         with an embedding E (V, D): the lookup of W_ih E^T, (G*H, V)
    y_k   = cell_k(x_k, state_k)            (H, T, B) for k = 0 .. L-1
    x_k+1 = dropout(y_k)                    inverted dropout on every layer's output in training
    W_hh  -> W_hh * M_k                     weight drop (DropConnect) of the recurrent weights in training:
                                            one mask a step, 0 or 1/keep, for every stream and time step
    logits = x_L^T W_dec^T + b_dec          (T*B, V)
    loss  = mean over T*B of -log softmax(logits)[target]

Parameters are held with PyTorch's shapes, the LSTM's gate blocks reordered (cells.py);
`state_dict()` / `load_state_dict()` convert to and from PyTorch's names and block order for a
module with an `rnn` (nn.RNN / nn.LSTM / nn.GRU, batch_first=False) and a `decoder` (nn.Linear):

    rnn.weight_ih_l{k} (G*H, V, D or H)  rnn.weight_hh_l{k} (G*H, H)
    rnn.bias_ih_l{k}   (G*H,)            rnn.bias_hh_l{k}   (G*H,)
    decoder.weight     (V, H)            decoder.bias       (V,)
    encoder.weight     (V, D)            with an embedding (nn.Embedding), else absent

Inside, activations are columns: a layer's outputs are (H, T, B) feature-major, so each weight
gradient is one (out, T*B) @ (T*B, in) product over the chunk (cells.py explains the layouts).
State is explicit: a tuple of (L, B, H) arrays, (h,) for RNN and GRU, (h, c) for LSTM,
the same layout as PyTorch's h_0 / (h_0, c_0). The model holds only math: no files, no loop.
"""

import numpy as np

from ..parallel.solo import SOLO
from .buffers import Workspace, aligned_zeros, as_matrix, rowsum
from .cells import make_cell
from .layernorm import GateNorm
from .params import PUBLIC, _block_perm, init_params, layer_prefixes, lookup_columns, scatter_columns


STEP_ALIGN = 16  # generation's stacked products: h, the bias column, zeros up to a multiple of this many columns


class CharRNN:
    """A stacked RNN / LSTM / GRU character model with hand-written backward."""

    def __init__(self, cell_type, vocab_size, hidden_size, num_layers=1, dropout=0.0,
                 seed=0, dtype=np.float32, init="pytorch", init_scale=None, forget_bias=0.0, layer_norm=False,
                 weight_drop=0.0, embedding=0):
        assert num_layers >= 1 and hidden_size >= 1 and vocab_size >= 1 and 0.0 <= dropout < 1.0
        assert 0.0 <= weight_drop < 1.0
        assert not layer_norm or cell_type == "lstm"
        self.cell = make_cell(cell_type)
        self.layer_norm = layer_norm
        self.cell_type = cell_type
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.weight_drop = weight_drop
        self.embedding = embedding  # D numbers a character, or 0: one-hot
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.params = init_params(self.cell, vocab_size, hidden_size, num_layers, rng, self.dtype,
                                  init, init_scale, forget_bias, layer_norm, embedding)
        self._ws = [Workspace(f"layer{k}") for k in range(num_layers)]
        self._ws_top = Workspace("top")

    # ---- state -------------------------------------------------------------------------

    def zero_state(self, batch_size):
        """A fresh state: tuple of (L, B, H) zeros, (h,) or (h, c)."""
        shape = (self.num_layers, batch_size, self.hidden_size)
        return tuple(np.zeros(shape, dtype=self.dtype) for _ in self.cell.state_names)

    def dropout_masks(self, T, B, rng):
        """Inverted-dropout masks, one (H, T, B) per layer output, or None when dropout is off."""
        if self.dropout <= 0.0:
            return None
        return [self._keep_mask(rng, (self.hidden_size, T, B), 1.0 - self.dropout) for _ in range(self.num_layers)]

    def weight_masks(self, rng):
        """Weight-drop masks, one per layer shaped like W_hh (0 or 1 / keep), or None when it is off."""
        if self.weight_drop <= 0.0:
            return None
        return [self._keep_mask(rng, self.params[f"Wh{k}"].shape, 1.0 - self.weight_drop)
                for k in range(self.num_layers)]

    def _keep_mask(self, rng, shape, keep):
        """Each entry kept with probability `keep` and scaled by 1 / keep (inverted dropout), else 0."""
        u = rng.random(shape, dtype=np.float32)  # float32 draws: half the work
        mask = np.less(u, np.float32(keep)).astype(self.dtype)
        mask *= self.dtype.type(1.0 / keep)
        return mask

    # ---- forward / backward --------------------------------------------------------------

    def forward(self, idx, targets, state, masks=None, resets=None, team=SOLO, wmasks=None):
        """Run a (T, B) chunk of indices from `state`.

        Returns (loss, new_state, cache): loss is the mean cross-entropy in nats over T*B
        targets (None when targets is None), cache feeds backward() and holds the (T*B, V)
        logits, row t*B + b for step t of stream b. `masks` (from dropout_masks) turns dropout
        on; None means evaluation. `resets` (T, B) bool, or None: True where stream b's state is
        reset to zero before step t, in every layer (lines mode: an item starts at idx[t, b]).
        `wmasks` (from weight_masks) drops recurrent weights: the chunk runs on W_hh * M_k.
        `team` (team.py): the processes sharing this step, each on its hidden units and its share
        of the logits' rows, whose softmax and loss it computes; process 0 returns the loss.
        """
        T, B = idx.shape
        p, cell, dt, H, gates = self.params, self.cell, self.dtype, self.hidden_size, self.cell.gates
        keep = None if resets is None else np.logical_not(resets).astype(dt)[:, None, :]  # (T, 1, B)
        u, Gu = team.units, gates * H // team.size  # this process's units and gate rows
        layers, new_state = [], [[] for _ in cell.state_names]
        x = None  # (H, T, B) feature-major input of the next layer
        for k in range(self.num_layers):
            ws = self._ws[k]
            xw = ws.get("xw", (T, Gu, B), dt)  # time-major input contribution
            bias = team.rows(cell.input_bias(p[f"bx{k}"], p[f"bh{k}"]), gates)
            if k == 0:
                # the one-hot product W_ih x as a lookup of a (G, V) table with the biases folded in
                lookup_columns(self._input_table(team.rows(p["Wx0"], gates)) + bias[:, None], idx, xw)
            else:
                np.matmul(team.rows(p[f"Wx{k}"], gates), x.transpose(1, 0, 2), out=xw)  # (G, H) @ (T, H, B), per step
                xw += bias[:, None]
            s0 = tuple(np.ascontiguousarray(s[k].T[u]) for s in state)  # (H, B) columns
            norm = {"norm": GateNorm(p[f"lw{k}"], p[f"lb{k}"], gates, ws, T, B)} if self.layer_norm else {}
            Wh = p[f"Wh{k}"] if wmasks is None else np.multiply(p[f"Wh{k}"], wmasks[k],
                                                                 out=ws.get("Wh_dropped", p[f"Wh{k}"].shape, dt))
            HS, sT, cache = cell.forward(xw, s0, Wh, p[f"bh{k}"], ws, keep, team, **norm)
            for j, s in enumerate(sT):
                if team.size > 1:  # every process's units of the final state, complete after the sync below
                    full = team.buffer(ws, f"final{j}", (H, B), dt)
                    full[u] = s
                    s = full
                new_state[j].append(s.T)
            hs = HS[:, 1:]  # (H, T, B)
            if masks is not None:
                x = team.buffer(ws, "drop", hs.shape, dt)
                np.multiply(hs[u], masks[k][u], out=x[u])
            else:
                x = hs
            team.sync()  # the layer's output complete: the next layer's input
            layers.append((x, cache))
        new_state = tuple(np.stack(s) for s in new_state)  # (L, B, H)
        N = T * B
        logits = team.buffer(self._ws_top, "logits", (N, self.vocab_size), dt)
        n = team.own(N)  # this process's rows: positions t*B + b
        np.matmul(as_matrix(x).T[n], p["Wy"].T, out=logits[n])  # (T*B, H) @ (H, V)
        logits[n] += p["by"]
        probs = team.buffer(self._ws_top, "probs", logits.shape, dt)  # then the backward's dlogits
        losses = team.buffer(self._ws_top, "losses", (team.size,), np.float64)  # each process's share
        if targets is not None:  # a process with no rows (a chunk of fewer positions than processes) adds 0
            share = softmax_cross_entropy(logits[n], targets.reshape(-1)[n], probs[n])[0] if logits[n].size else 0.0
            losses[team.rank] = share * (len(probs[n]) / N)  # its rows' mean, weighted by their count
        team.sync()  # every process's rows of the logits and the probabilities
        cache = {"idx": idx, "targets": targets, "layers": layers, "masks": masks, "logits": logits, "wmasks": wmasks}
        if team.rank != 0:
            return None, new_state, cache
        loss = None
        if targets is not None:
            loss = float(losses.sum())
            cache["probs"] = probs
        return loss, new_state, cache

    def backward(self, cache, dstate=None, team=SOLO):
        """Gradients of the mean loss: (grads with the keys of params, dstate0 like the state).

        `dstate` is an optional gradient arriving at the final state (zero for truncated BPTT).
        With a team of several processes (team.py) every process computes its rows of every
        recurrent layer's gradients and process 0 returns them all (dstate0: None).
        """
        p, cell, dt, gates = self.params, self.cell, self.dtype, self.cell.gates
        idx, layers, masks = cache["idx"], cache["layers"], cache["masks"]
        T, B = idx.shape
        H, N, u = self.hidden_size, T * B, team.units
        grads = {}
        dx = team.buffer(self._ws_top, "dx", (H, T, B), dt)  # feature-major gradient at the top layer's output
        dlogits = team.buffer(self._ws_top, "probs", (N, self.vocab_size), dt)  # the probabilities, made dlogits below
        # backprop through softmax cross-entropy, each process its rows: (p - onehot) / N
        n = team.own(N)
        dlogits[np.arange(N)[n], cache["targets"].reshape(-1)[n]] -= 1.0
        dlogits[n] *= dt.type(1.0 / N)
        team.sync()  # dlogits complete
        dby = rowsum(dlogits.T) if team.rank == 0 else None
        grads["by"] = team.from_first("by", dby, (self.vocab_size,), dt)  # every process holds every gradient
        # each process: its units' columns of the decoder's gradient (transposed) and its units of dx
        top = as_matrix(layers[-1][0])  # (H, N)
        grads["Wy"] = team.put_rows("WyT", np.matmul(top[u], dlogits), 1).T  # (H, N) @ (N, V), seen as (V, H)
        np.matmul(p["Wy"][:, u].T, dlogits.T, out=as_matrix(dx[u]))
        dstate0 = [[None] * self.num_layers for _ in cell.state_names]
        for k in range(self.num_layers - 1, -1, -1):
            _, lcache = layers[k]
            dxu = dx[u]  # this process's units (H, T, B)
            if masks is not None:
                dxu *= masks[k][u]  # backprop through dropout
            ds = tuple(np.zeros(dxu[:, 0].shape, dt) if dstate is None else np.ascontiguousarray(dstate[j][k].T[u])
                       for j in range(len(cell.state_names)))
            dxw, ds0, dWh, dbh = cell.backward(dxu.transpose(1, 0, 2), ds, lcache)
            if self.layer_norm:  # one process: no team rows to gather
                grads[f"lw{k}"], grads[f"lb{k}"] = lcache[-1].grads()
            if cache["wmasks"] is not None:
                dWh *= team.rows(cache["wmasks"][k], gates)  # the chunk ran on W_hh * M: dL/dW_hh = dL/d(W_hh * M) * M
            for j, s in enumerate(ds0):
                dstate0[j][k] = s.T
            own = as_matrix(dxw[team.own(dxw.shape[0])])  # (G, N): this process's rows
            grads[f"Wh{k}"] = team.put_rows(f"Wh{k}", dWh, gates)
            grads[f"bh{k}"] = team.put_rows(f"bh{k}", dbh, gates)
            if k == 0:
                dWx = scatter_columns(idx.reshape(-1), own, np.empty((own.shape[0], self.vocab_size), dt))
                grads["bx0"] = team.put_rows("bx0", rowsum(dWx), gates)  # one-hot input: each column of dxw lands in one column
                if self.embedding:  # dWx is the table's gradient: W_ih's is dWx E, E's dWx^T W_ih (below)
                    dtable = team.put_rows("table", dWx, gates)
                    dWx = np.matmul(dWx, p["E"])  # (G, V) @ (V, D)
                grads["Wx0"] = team.put_rows("Wx0", dWx, gates)
            else:
                grads[f"bx{k}"] = team.put_rows(f"bx{k}", rowsum(own), gates)
                grads[f"Wx{k}"] = team.put_rows(f"Wx{k}", np.matmul(own, as_matrix(layers[k - 1][0]).T), gates)  # (G, N) @ (N, H)
                dx = team.buffer(self._ws[k], "dx_in", (H, T, B), dt)
                team.sync()  # every process's rows of dxw
                np.matmul(team.transposed(p[f"Wx{k}"], gates, self._ws[k], "WxT", copy=False),
                          as_matrix(dxw), out=as_matrix(dx[u]))
        team.finish()  # every process's rows of every gradient
        grads["Wy"] = team.from_first("Wy", grads["Wy"] if team.rank == 0 else None, p["Wy"].shape, dt)
        if self.embedding:  # every process's rows of the table's gradient: (V, G) @ (G, D)
            dE = np.matmul(dtable.T, p["Wx0"]) if team.rank == 0 else None
            grads["E"] = team.from_first("E", dE, p["E"].shape, dt)
        if team.size > 1:
            return grads, None
        dstate0 = tuple(np.stack(s) for s in dstate0)
        return grads, dstate0

    def activations(self, cache):
        """Per layer, {name: (H, T, B)} of the states the forward pass that made `cache` went
        through (h, and c for the LSTM): views into the workspace, valid until the next forward."""
        return [self.cell.activations(lcache) for _, lcache in cache["layers"]]

    def prepare_step(self, batch_size):
        """Tables and buffers for step(): valid while the parameters stay as they are.

        Each layer's new h_t is multiplied once, by its W_hh stacked on the next layer's W_ih (the
        decoder's weight for the top layer): one product gives this layer's recurrent term for the
        next step and the next layer's input term (or the logits) for this one. The biases ride in
        the same product as one more column, multiplied by a constant 1 kept under h (zero columns
        follow, up to a multiple of 16, and the arrays start on cache lines, so every row does).
        Layer 0's input is a row of W_ih^T with its biases folded in. The sigmoid gates' rows are
        stored halved (exact), as cell.stepper expects. Every buffer, view and cell stepper is made
        here, once, so a batch-1 step is its NumPy calls and little else.
        """
        p, cell, dt = self.params, self.cell, self.dtype
        L, B, H, G, V = self.num_layers, batch_size, self.hidden_size, cell.gates * self.hidden_size, self.vocab_size
        S = 0 if self.layer_norm else cell.sigmoid_gates * H  # rows stored halved, as cell.stepper expects
        Hx = (H // STEP_ALIGN + 1) * STEP_ALIGN  # h, the bias column, zeros: float32 rows of whole cache lines
        hx = aligned_zeros((L, Hx, B), dt)  # [h_t; 1; 0...] per layer
        hx[:, H] = 1.0
        state = (hx[:, :H],) + tuple(np.zeros((L, H, B), dt) for _ in cell.state_names[1:])
        layers = []  # per layer: (stacked weight, [h; 1], product, its recurrent part, stepper, its next-layer part)
        for k in range(L):
            if k + 1 < L:
                nxt, nxt_bias = p[f"Wx{k + 1}"], cell.input_bias(p[f"bx{k + 1}"], p[f"bh{k + 1}"])
            else:
                nxt, nxt_bias = p["Wy"], p["by"]
            W = aligned_zeros((G + nxt.shape[0], Hx), dt)  # [[W_hh, recurrent bias], [W_next, its bias]]
            W[:G, :H], W[:G, H] = p[f"Wh{k}"], cell.recurrent_bias(p[f"bh{k}"])
            W[G:, :H], W[G:, H] = nxt, nxt_bias
            W[:S] *= 0.5
            if k + 1 < L:
                W[G : G + S] *= 0.5
            P = aligned_zeros((W.shape[0], B), dt)
            norm = {"norm": GateNorm(p[f"lw{k}"], p[f"lb{k}"], cell.gates, None, 1, B)} if self.layer_norm else {}
            layers.append((W, hx[k], P, P[:G], cell.stepper(P[:G], tuple(s[k] for s in state), **norm), P[G:]))
        x0 = aligned_zeros((V, G), dt)  # (V, G): rows contiguous
        x0[...] = (self._input_table(p["Wx0"]) + cell.input_bias(p["bx0"], p["bh0"])[:, None]).T
        x0[:, :S] *= 0.5
        return {
            "x0": x0,
            "rows": [x0[j : j + 1].T for j in range(V)],  # (G, 1) views: batch 1 needs no copy
            "layers": layers,
            "xw": np.empty((G, B), dt),
            "logits": layers[-1][5].T,  # (B, V) view of the top product
            "view": tuple(s.transpose(0, 2, 1) for s in state),  # (L, B, H) views
        }

    def _input_table(self, Wx0):
        """Layer 0's input term for each character, (G, V): W_ih itself for a one-hot input, W_ih E^T
        with an embedding (the embedding and the product folded into one table: a lookup all the same)."""
        return Wx0 if not self.embedding else np.matmul(Wx0, self.params["E"].T)

    def step(self, idx, state, ctx):
        """One generation step for a (B,) array of indices (or an int when B is 1): (logits (B, V), new state).

        Evaluation mode (no dropout), no cache. `ctx` comes from prepare_step(B); the returned
        arrays belong to it and are valid until the next call, which updates them in place.
        """
        layers = ctx["layers"]
        if state[0] is not ctx["view"][0]:  # a state from elsewhere: copy it in (once per generation)
            for s, d in zip(state, ctx["view"]):
                np.copyto(d, s)
            for W, hx, _, hw, _, _ in layers:
                np.matmul(W[: hw.shape[0]], hx, out=hw)  # the recurrent term of the first step
        if isinstance(idx, (int, np.integer)):
            x = ctx["rows"][idx]  # one-hot product as a row lookup, no copy
        else:
            x = ctx["xw"]
            np.copyto(x.T, ctx["x0"].take(idx, 0))
        for W, hx, P, _, advance, out in layers:
            advance(x)
            np.dot(W, hx, P)  # [W_hh; W_next] [h_t; 1]: next step's recurrent term, next layer's input
            # (np.dot, not np.matmul: the same BLAS call with less dispatch, which counts at batch 1)
            x = out
        return ctx["logits"], ctx["view"]

    # ---- PyTorch names -----------------------------------------------------------------

    def state_dict(self):
        """Parameters under PyTorch's state_dict names and shapes (new float arrays)."""
        p, H = self.params, self.hidden_size
        perm = _block_perm(self.cell.torch_blocks, H)
        sd = {}
        for k in range(self.num_layers):
            for n in layer_prefixes(self.layer_norm):
                sd[PUBLIC[n].format(k)] = p[f"{n}{k}"][perm]
        sd["decoder.weight"] = p["Wy"].copy()
        sd["decoder.bias"] = p["by"].copy()
        if self.embedding:
            sd["encoder.weight"] = p["E"].copy()
        return sd

    def load_state_dict(self, sd):
        """Set parameters from PyTorch-named arrays; shapes must match exactly."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(sd))
        if missing:
            raise ValueError(f"missing parameter arrays: {', '.join(missing)}")
        for name, ref in expected.items():
            if tuple(sd[name].shape) != ref.shape:
                raise ValueError(f"parameter {name} has shape {tuple(sd[name].shape)}, expected {ref.shape}")
        inv = np.argsort(_block_perm(self.cell.torch_blocks, self.hidden_size))
        p, dt = self.params, self.dtype
        for k in range(self.num_layers):
            for n in layer_prefixes(self.layer_norm):
                p[f"{n}{k}"] = np.ascontiguousarray(np.asarray(sd[PUBLIC[n].format(k)])[inv], dtype=dt)
        p["Wy"] = np.array(sd["decoder.weight"], dtype=dt)  # copies: training updates parameters in place
        p["by"] = np.array(sd["decoder.bias"], dtype=dt)
        if self.embedding:
            p["E"] = np.array(sd["encoder.weight"], dtype=dt)

    def num_params(self):
        return int(sum(v.size for v in self.params.values()))


def softmax_cross_entropy(logits, targets, probs=None):
    """Mean -log softmax(logits)[targets] computed stably; returns (loss, probs), into `probs` if given.

    >>> round(softmax_cross_entropy(np.zeros((1, 4)), np.array([2]))[0], 6) == round(float(np.log(4)), 6)
    True
    """
    N, V = logits.shape
    probs = np.empty_like(logits) if probs is None else probs
    m = logits.max(axis=1, keepdims=True)
    shifted_t = logits[np.arange(N), targets] - m[:, 0]
    np.subtract(logits, m, out=probs)  # shift for stability
    np.exp(probs, out=probs)
    total = probs.sum(axis=1, keepdims=True)
    # -log p[target] = log(sum exp(shifted)) - shifted[target]
    loss = float(np.mean(np.log(total[:, 0], dtype=np.float64) - shifted_t.astype(np.float64)))
    probs /= total
    return loss, probs
