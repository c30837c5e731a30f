"""Optimizers (Adam, RMSprop, Adagrad, SGD with momentum), gradient clipping and the LR schedule.

Every optimizer keeps its state as named arrays (`state_arrays()` / `load_state_arrays()`), so a
checkpoint stores it exactly. Updates are in place, with preallocated scratch buffers.

    adam     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    rmsprop  v = a v + (1 - a) g^2;  p -= lr g / (sqrt(v) + eps)
    adagrad  v = v + g^2;            p -= lr g / (sqrt(v) + eps)
    sgd      u = mu u + g;           p -= lr u

weight_decay wd > 0 first shrinks every weight matrix (the parameters named W..., never a bias),
decoupled from the gradient as in AdamW (Loshchilov & Hutter): p *= 1 - lr wd, then the update.
"""

import math

import numpy as np


class Optimizer:
    name = ""
    slots = ()  # names of the per-parameter state arrays

    def __init__(self, params, weight_decay=0.0, **hyper):
        self.hyper = hyper
        self.weight_decay = weight_decay
        self.t = 0  # updates taken
        self.state = {s: {k: np.zeros_like(v) for k, v in params.items()} for s in self.slots}
        self._tmp = {k: np.empty_like(v) for k, v in params.items()}

    def step(self, params, grads, lr, share=None):
        """One update, in place. share(n) -> slice: update only that block of each parameter's
        flattened entries (the block a process of a team owns, team.py); None: all of them."""
        self.t += 1
        for k, p in params.items():
            arrays = (p, grads[k], self._tmp[k]) + tuple(self.state[s][k] for s in self.slots)
            if share is not None:
                block = share(p.size)
                arrays = tuple(flat(a)[block] for a in arrays)
            if self.weight_decay and decays(k):
                np.multiply(arrays[0], p.dtype.type(1.0 - lr * self.weight_decay), out=arrays[0])
            self._update(lr, *arrays)

    def _update(self, lr, p, g, tmp, *slots):
        """p -= the update, from gradient g, with the slots' arrays (self.slots) and scratch tmp."""
        raise NotImplementedError

    def state_arrays(self):
        """{'optim.t': ..., 'optim.<slot>.<param>': ...}: everything needed to continue exactly."""
        out = {"optim.name": np.array(self.name), "optim.t": np.array(self.t, dtype=np.int64)}
        for s, d in self.state.items():
            for k, v in d.items():
                out[f"optim.{s}.{k}"] = v
        return out

    def load_state_arrays(self, arrays):
        """Restore the state saved by state_arrays(); KeyError if it belongs to another optimizer."""
        if str(arrays.get("optim.name", "")) != self.name:
            raise KeyError("optim.name")
        self.t = int(arrays["optim.t"])
        for s, d in self.state.items():
            for k, v in d.items():
                src = arrays[f"optim.{s}.{k}"]
                if src.shape != v.shape:
                    raise ValueError(f"optimizer state {s}.{k} has shape {src.shape}, expected {v.shape}")
                np.copyto(v, src, casting="unsafe")  # into the array in place: a team shares it (team.py)


class Adam(Optimizer):
    name = "adam"
    slots = ("m", "v")

    def _update(self, lr, p, g, tmp, m, v):
        b1, b2, eps = self.hyper["beta1"], self.hyper["beta2"], self.hyper["eps"]
        m *= b1
        np.multiply(g, 1 - b1, out=tmp)
        m += tmp
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v *= b2
        v += tmp
        # bias corrections folded into two scalars: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)
        c2 = math.sqrt(1 - b2**self.t)
        lr_t = lr * c2 / (1 - b1**self.t)
        np.sqrt(v, out=tmp)
        tmp += eps * c2
        np.divide(m, tmp, out=tmp)
        tmp *= lr_t
        p -= tmp


def _rescaled_step(p, g, v, lr, eps, tmp):
    """p -= lr g / (sqrt(v) + eps), in place: the update RMSprop and Adagrad share."""
    np.sqrt(v, out=tmp)
    tmp += eps
    np.divide(g, tmp, out=tmp)
    tmp *= lr
    p -= tmp


class RMSprop(Optimizer):
    name = "rmsprop"
    slots = ("v",)

    def _update(self, lr, p, g, tmp, v):
        a = self.hyper["alpha"]
        np.multiply(g, g, out=tmp)
        tmp *= 1 - a
        v *= a
        v += tmp  # v = a v + (1 - a) g^2
        _rescaled_step(p, g, v, lr, self.hyper["eps"], tmp)


class Adagrad(Optimizer):
    name = "adagrad"
    slots = ("v",)

    def _update(self, lr, p, g, tmp, v):
        np.multiply(g, g, out=tmp)
        v += tmp  # v = v + g^2
        _rescaled_step(p, g, v, lr, self.hyper["eps"], tmp)


class SGD(Optimizer):
    name = "sgd"
    slots = ("u",)

    def _update(self, lr, p, g, tmp, u):
        u *= self.hyper["momentum"]
        u += g
        np.multiply(u, lr, out=tmp)
        p -= tmp


def decays(name):
    """Whether weight decay shrinks the parameter `name`: the weight matrices, not the biases.
    >>> [k for k in ("Wx0", "Wh0", "bx0", "bh0", "Wy", "by") if decays(k)]
    ['Wx0', 'Wh0', 'Wy']
    """
    return name.startswith("W")


OPTIMIZERS = {"adam": Adam, "rmsprop": RMSprop, "adagrad": Adagrad, "sgd": SGD}


def make_optimizer(name, params, tcfg):
    """The optimizer a TrainingConfig names, with its hyper-parameters."""
    return OPTIMIZERS[name](params, weight_decay=tcfg.weight_decay, beta1=tcfg.beta1, beta2=tcfg.beta2,
                            alpha=tcfg.alpha, momentum=tcfg.momentum, eps=tcfg.eps)


def flat(a):
    """a's entries as a 1-D view, to update a block of them in place (a copy would lose the update).

    >>> flat(np.zeros((2, 3))).shape
    (6,)
    """
    if not a.flags.c_contiguous:
        raise ValueError(f"a {a.shape} array updated by blocks must be contiguous")
    return a.reshape(-1)


def global_norm(grads):
    """sqrt of the sum of squares of every gradient entry (float64 accumulation)."""
    return math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads.values()))


def clip_gradients(grads, mode, threshold, norm=None, share=None):
    """Clip in place. mode "norm": scale all so the global norm is <= threshold; "value": clamp
    each element to [-threshold, threshold]. threshold 0 does nothing. Returns the pre-clip norm.
    share(n) -> slice: clip only that block of each gradient's flattened entries (see Optimizer.step).

    >>> g = {"w": np.array([3.0, 4.0])}; clip_gradients(g, "norm", 1.0), g["w"].tolist()
    (5.0, [0.6000000000000001, 0.8])
    """
    if norm is None:
        norm = global_norm(grads)
    if threshold > 0:
        blocks = grads.values() if share is None else [flat(g)[share(g.size)] for g in grads.values()]
        if mode == "norm":
            if norm > threshold:
                scale = threshold / norm
                for g in blocks:
                    g *= g.dtype.type(scale)
        else:
            for g in blocks:
                np.clip(g, -threshold, threshold, out=g)
    return norm


def clip_and_step(optimizer, params, grads, clip_mode, grad_clip, lr, norm, t, share=None):
    """A training step's update: clip the gradients (their global norm is `norm`), then take update
    number t. share(n) -> slice: only that block of each array's flattened entries, the block one
    process of a team owns (team.update); every entry is updated on its own, so the blocks together
    give exactly the whole update."""
    clip_gradients(grads, clip_mode, grad_clip, norm, share)
    optimizer.t = int(t) - 1  # a helper process's copy of the count follows process 0's
    optimizer.step(params, grads, lr, share)


def cosine_fraction(tcfg, step, time_fraction=0.0, anchor=(0.0, 0.0)):
    """How far the cosine decay has gone, in [0, 1], at update `step` (1-based).

    The clock is the step over lr_decay_steps, else max_steps, else `time_fraction` (elapsed /
    max_minutes). `anchor` (f0, r0) continues a resumed run smoothly when its horizon changed:
    where the clock reads r0 the decay stands at f0, and it goes on linearly to 1 at the new
    horizon, instead of jumping back. (0, 0), a fresh run, is the plain clock.
    >>> cosine_fraction(None, 0, 0.75, anchor=(0.5, 0.5))  # halfway from r0 = 0.5 to 1: halfway from f0 = 0.5
    0.75
    """
    horizon = tcfg and (tcfg.lr_decay_steps or tcfg.max_steps)
    if horizon:
        raw = min(max(step - tcfg.warmup_steps, 0) / max(horizon - tcfg.warmup_steps, 1), 1.0)
    else:
        raw = min(max(time_fraction, 0.0), 1.0)
    f0, r0 = anchor
    if (f0, r0) == (0.0, 0.0):
        return raw
    if r0 >= 1.0:
        return 1.0
    return min(max(f0 + (1.0 - f0) * (raw - r0) / (1.0 - r0), f0), 1.0)


def learning_rate(tcfg, step, time_fraction=0.0, anchor=(0.0, 0.0)):
    """The learning rate for update number `step` (1-based) under the config's schedule.

    The cosine schedule runs over lr_decay_steps, else max_steps; with neither it runs over
    max_minutes, using `time_fraction` (elapsed / max_minutes) as its clock, so a time-limited run
    always finishes its decay whatever the machine's speed (such a run is not bitwise repeatable).
    `anchor`: see cosine_fraction.
    """
    lr = tcfg.learning_rate
    if tcfg.warmup_steps and step <= tcfg.warmup_steps:
        return lr * step / tcfg.warmup_steps
    if tcfg.lr_schedule == "cosine":
        frac = cosine_fraction(tcfg, step, time_fraction, anchor)
        return lr * (tcfg.lr_min_fraction + (1 - tcfg.lr_min_fraction) * 0.5 * (1 + math.cos(math.pi * frac)))
    return lr * tcfg.lr_decay ** ((step - 1) // tcfg.lr_decay_every)
