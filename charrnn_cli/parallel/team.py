"""One training step, several processes: the hidden units split between forked processes.

NumPy runs every elementwise call on one core, so in one process a step's gate equations leave
the other cores idle while BLAS uses them all for the products (docs/performance.md: on 2 cores
that is a large share of a step). A team of S processes, each with its own
BLAS threads, splits every recurrent layer by hidden units: process j owns units
[j H/S, (j+1) H/S), that is its rows of every gate block of W_ih, W_hh and the biases, and it
computes those rows of every product, every gate equation and every weight gradient. They meet
twice per time step, through memory they share:

    forward   h_t (H, B) = every process's units of h_t   -> sync -> each: its gates of W_hh h_t
    backward  da_t (G, B) = every process's gate rows      -> sync -> each: its units of W_hh^T da_t

A sync is a spin on counters in shared memory (a sleeping process wakes up slower, on a virtual
machine, than a step's work takes). Process 0 is the one that runs the training loop; it
alone computes the softmax, the loss, the gradient norm and everything else, while the others wait
for the next command. The decoder's products are shared too: the logits by rows (positions
t*B + b), its gradients by units, like the recurrent layers'. So is the update: each process clips
and steps its block of every parameter's entries, an elementwise update being exact in any blocks.
Parameters and the optimizer's state live in the shared memory, so what one process updates is
what all read. The math is the same as one process's: each element of each product and each
gradient is computed once, by one process, in the same order (tests/test_team.py checks the
gradients and the update).

Rows "laid out process by process" (P order): a (G, ...) buffer every process writes holds process
0's rows of gate blocks 0, 1, .. then process 1's, so each process's rows are one contiguous block.

    team.rank, team.size        who this process is; Solo (one process) is rank 0 of 1
    team.units                  this process's hidden units, a slice of range(H)
    team.own(n)                 its block of a P-ordered buffer of n rows (of any n rows to share out)
    team.rows(W, gates)         its rows of a weight or bias (internal order), contiguous
    team.transposed(W, gates, ws, name)   (W^T)[units] with W's rows in P order, contiguous
    team.buffer(ws, name, shape, dtype)   an array every process of the team sees
    team.put_rows(name, own, gates)       a gradient's full array, its rows from every process
    team.from_first(name, a, shape, dtype)   process 0's array a, seen by every process
    team.begin_update(*args)              process 0: the helpers update their blocks; returns its own, share
    team.end_update()                     return when every block is updated
    team.sync()                 return when every process has reached the same sync
    team.arrive(); team.wait()  the same sync in two halves, with this process's own work between

Solo makes each of these the identity, so the cells and the model read the same in one process.
"""

import math
import mmap
import os
import signal
import time
import zlib

import numpy as np

from .solo import SOLO, TeamError, TeamStalled


STALL_GRACE_S = 1.0  # a wait this long, with a stop asked for, is given up (a healthy one takes microseconds)
STALL_NOTE_S = 10.0  # a wait this long on a stopped helper is reported, once


_LINE = 8  # int64s per 64-byte cache line
_FLAGS = 0  # _FLAGS + _LINE j: the syncs process j has reached
_CMD = 8 * _LINE  # the parent's command: [sequence, kind, T, B, has masks, has resets, has targets, has wmasks]
_SIG = 9 * _LINE  # _SIG + j: a checksum of process j's shared-memory layout, written at each step's end
_ERR_AT, _ERR_LEN = 4096, 4096  # bytes: the first error a helper met, for the parent's message
_ARENA_AT = 8192
STEP, FORWARD, STOP, UPDATE = 1, 2, 3, 4  # commands: forward and backward (training), forward only
# (validation), stop, the parameters' update (each process its block of every parameter)


class Arena:
    """Named arrays in one shared anonymous mapping (forked processes see the same pages).

    Every process asks for the same names in the same order, so each name gets the same offset
    in each; a name asked for with more elements than it has gets a new, larger slot."""

    def __init__(self, nbytes):
        self.mm = mmap.mmap(-1, _ARENA_AT + nbytes)  # MAP_SHARED | MAP_ANONYMOUS: pages on first touch
        self.top, self.slots, self.signature = _ARENA_AT, {}, 0

    def ints(self, offset, count):
        return np.frombuffer(self.mm, np.int64, count=count, offset=offset)

    def get(self, name, shape, dtype):
        dtype = np.dtype(dtype)
        n = math.prod(shape)
        slot = self.slots.get(name)
        if slot is None or slot[1] < n or slot[2] != dtype:
            start = -(-self.top // 64) * 64  # cache-line aligned
            end = start + max(n, 1) * dtype.itemsize
            if end > len(self.mm):
                raise TeamError(f"the team's shared memory is full ({len(self.mm) >> 20} MB) at {name!r}")
            slot = self.slots[name] = (start, n, dtype)
            self.top = end
            self.signature = zlib.crc32(f"{name}:{start}:{n}".encode(), self.signature)
        return np.frombuffer(self.mm, slot[2], count=n, offset=slot[0]).reshape(shape)


def _row_index(H, gates, size, rank):
    """Internal rows of process `rank`'s units in every gate block. _row_index(4, 2, 2, 1).tolist() == [2, 3, 6, 7]"""
    a, b = H * rank // size, H * (rank + 1) // size
    return np.concatenate([np.arange(k * H + a, k * H + b) for k in range(gates)])


class ForkTeam:
    """Process 0 (this one) and size - 1 forked helpers; see the module docstring.

    start(model) moves the parameters into shared memory and forks; begin() hands the helpers a
    step's inputs; close() stops them (also run when process 0 exits, by signal or error: a helper
    whose parent is gone exits at its next wait)."""

    def __init__(self, size, hidden_size, arena_bytes):
        assert size >= 2 and hidden_size % size == 0
        self.size, self.rank, self.H = size, 0, hidden_size
        self.arena = Arena(arena_bytes)
        self.ctrl = self.arena.ints(0, _ARENA_AT // 8)
        self.flags = self.ctrl[_FLAGS : _FLAGS + size * _LINE : _LINE]
        self.count, self.pids, self.parent, self._index = 0, [], os.getpid(), {}
        self.units = self.own(hidden_size)
        self.stop_requested = lambda: False  # process 0: whether a signal asked the run to stop
        self.warn = None  # process 0: where to say that a helper is stopped
        self._wait_t0, self._noted, self._continued = None, False, False

    # ---- the interface the cells and the model use ------------------------------------------

    def own(self, n):
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def _rows_of(self, n, gates, ranks):
        """Internal rows of the units of `ranks`, in that order, in every gate block of n rows
        (all the ranks in order: the P order)."""
        key = (n, gates, ranks)
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = np.concatenate([_row_index(n // gates, gates, self.size, j) for j in ranks])
        return idx

    def rows(self, W, gates):
        return W[self._rows_of(W.shape[0], gates, (self.rank,))]

    def transposed(self, W, gates, ws, name, copy=True):
        """(W^T)[units] with W's rows in P order: always a copy (the rows are permuted)."""
        P = self._rows_of(W.shape[0], gates, tuple(range(self.size)))
        WT = ws.get(name, (self.H // self.size, W.shape[0]), W.dtype)
        np.copyto(WT, W.T[self.units][:, P])  # = W[P][:, units].T, in about half the time
        return WT

    def buffer(self, ws, name, shape, dtype):
        return self.arena.get(f"{ws.tag}/{name}", shape, dtype)

    def put_rows(self, name, own, gates):
        full = self.arena.get(f"grad/{name}", (own.shape[0] * self.size,) + own.shape[1:], own.dtype)
        full[self._rows_of(full.shape[0], gates, (self.rank,))] = own
        return full

    def from_first(self, name, a, shape, dtype):
        """Process 0's array `a` (the others pass None) as a contiguous array every process sees,
        once the next sync or command has passed."""
        shared = self.arena.get(f"first/{name}", shape, dtype)
        if self.rank == 0:
            np.copyto(shared, a)
        return shared

    def begin_update(self, *args):
        """Process 0: start the step's update (lr, norm, t = args) in the helpers, each on its block of
        every parameter's entries (the function make_team was given); returns this process's block,
        share(n). end_update() returns when all are done, so the next step reads the new parameters."""
        vals = self.arena.get("update/args", (len(args),), np.float64)
        vals[:] = args
        self._post(UPDATE, len(args))
        return self.own

    def end_update(self):
        self.sync()

    def update(self, apply, grads, *args):
        """begin_update, apply(grads, args, share) on this process's block, end_update."""
        apply(grads, args, self.begin_update(*args))
        self.end_update()

    def finish(self):
        """The step's last sync; process 0 then checks that every process laid out its memory alike."""
        self.ctrl[_SIG + self.rank] = self.arena.signature
        self.sync()
        if self.rank == 0 and len(set(self.ctrl[_SIG : _SIG + self.size].tolist())) != 1:
            raise TeamError("the team's processes disagree on their shared memory layout (a bug)")

    def sync(self):
        self.arrive()
        self.wait()

    def arrive(self):
        """The first half of a sync: tell the others this process has reached it."""
        self.count += 1
        self.flags[self.rank] = self.count

    def wait(self):
        """The second half: return when every process has arrived at this sync. Work between the
        two halves fills the wait for a later process, and must not touch what the sync guards."""
        c, flags = self.count, self.flags
        self._wait_t0 = None
        for j in range(self.size):
            spins = 0
            while flags[j] < c:
                spins += 1
                if spins & 0x3FF == 0:
                    self._check(spins)

    # ---- process 0: starting, feeding and stopping the helpers --------------------------------

    def start(self, model, apply=None, shared=()):
        """Move the model's parameters, and every array of the dicts in `shared` (the optimizer's
        state), into shared memory and fork the helpers; apply is the update's function (update())."""
        self.model, self.apply = model, apply  # begin() lays out its inputs by the model's shapes
        for prefix, arrays in [("param", model.params)] + [(f"shared{j}", d) for j, d in enumerate(shared)]:
            for name, a in arrays.items():
                arrays[name] = self.arena.get(f"{prefix}/{name}", a.shape, a.dtype)
                np.copyto(arrays[name], a)
        self.seen = int(self.ctrl[_CMD])  # before the fork: a helper starts waiting for the command after it
        for rank in range(1, self.size):
            pid = os.fork()
            if pid == 0:
                self._serve(rank, model)  # never returns
            self.pids.append(pid)

    def _inputs(self, T, B, model):
        """The step's inputs as every process sees them (the same names, in the same order)."""
        L, H, S = model.num_layers, model.hidden_size, len(model.cell.state_names)
        x = self.arena.get("in/x", (T, B), np.int64)
        y = self.arena.get("in/y", (T, B), np.int64)
        state = [self.arena.get(f"in/state{j}", (L, B, H), model.dtype) for j in range(S)]
        masks = [self.arena.get(f"in/mask{k}", (H, T, B), model.dtype) for k in range(L)]
        resets = self.arena.get("in/resets", (T, B), np.bool_)
        wmasks = [self.arena.get(f"in/wmask{k}", model.params[f"Wh{k}"].shape, model.dtype)
                  for k in range(L if model.weight_drop > 0 else 0)]  # model.weight_drop: W_hh's masks
        return x, y, state, masks, resets, wmasks

    def begin(self, x, state, masks, resets, backward=True, targets=None, wmasks=None):
        """Hand the helpers step `x` (T, B) from `state`: they start it at once (backward=False:
        the forward pass only, as validation runs it). With the targets, each process computes
        the softmax and the loss of its rows of the logits."""
        T, B = x.shape
        sx, sy, sstate, smasks, sresets, swmasks = self._inputs(T, B, self.model)
        np.copyto(sx, x)
        if targets is not None:
            np.copyto(sy, targets)
        for dst, src in zip(sstate, state):
            np.copyto(dst, src)
        for dst, src in zip(smasks, masks or ()):
            np.copyto(dst, src)
        for dst, src in zip(swmasks, wmasks or ()):
            np.copyto(dst, src)
        if resets is not None:
            np.copyto(sresets, resets)
        self._post(STEP if backward else FORWARD, T, B, masks is not None, resets is not None, targets is not None,
                   wmasks is not None)

    def _post(self, kind, *fields):
        """Give the helpers a command: its kind and fields first, then the sequence number, so a
        helper that sees the new number sees the rest."""
        cmd = self.ctrl[_CMD : _CMD + 2 + len(fields)]
        cmd[1:] = (kind,) + fields
        cmd[0] += 1

    def close(self):
        """Stop the helpers and wait for them (idempotent)."""
        if not self.pids:
            return
        self._post(STOP)
        for pid in self.pids:
            for _ in range(200):  # a helper waiting for a command exits within a few ms
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.005)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        self.pids = []

    def _check(self, spins):
        """While spinning: give the core away now and then, and notice a failed or vanished peer."""
        if self.rank == 0:
            err = bytes(self.arena.mm[_ERR_AT : _ERR_AT + _ERR_LEN]).rstrip(b"\0")
            gone = [(pid, status) for pid, status in (os.waitpid(p, os.WNOHANG) for p in self.pids) if pid]
            if gone or err:
                self.pids = [p for p in self.pids if p not in {pid for pid, _ in gone}]
                self.close()
                why = err.decode(errors="replace") or _how_it_ended(gone[0][1])
                raise TeamError(f"a helper process of the training step failed: {why}")
            if spins >= 1 << 16:
                self._watch()
        elif os.getppid() != self.parent or self.ctrl[_CMD + 1] == STOP:
            os._exit(0)  # process 0 is gone or done: nothing to finish
        if spins > 1 << 16:
            time.sleep(0.0002)  # a long wait (validation, a checkpoint): doze
        elif spins > 1 << 12:
            os.sched_yield()

    def _watch(self):
        """Process 0 in a long wait: give it up when a signal asks the run to stop (TeamStalled),
        and say once when the wait is on a stopped helper."""
        now = time.monotonic()
        if self._wait_t0 is None:
            self._wait_t0 = now
        waited = now - self._wait_t0
        if waited > STALL_GRACE_S and self.stop_requested():
            stopped = _stopped(self.pids)
            if stopped and not self._continued:  # let it finish the step, so the stop can save it whole
                self._continued = True
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
                if self.warn is not None:
                    self.warn(f"note: helper process {', '.join(map(str, stopped))} was stopped; continued it "
                              f"to finish the step under way, so that the stop saves it")
                self._wait_t0 = now
                return
            why = (f"helper process {', '.join(map(str, stopped))} is stopped" if stopped else
                   f"a helper process has not answered for {waited:.0f} s")
            raise TeamStalled(f"{why}; the step under way was given up")
        if waited > STALL_NOTE_S and not self._noted and self.warn is not None:
            stopped = _stopped(self.pids)
            if stopped:
                self._noted = True
                self.warn(f"warning: training waits for helper process {', '.join(map(str, stopped))}, which is "
                          f"stopped (kill -CONT {stopped[0]} resumes it; Ctrl-C or SIGTERM saves and stops)")

    # ---- a helper --------------------------------------------------------------------------

    def _serve(self, rank, model):
        """A helper's life: run the steps process 0 hands over, on this process's units, until told
        to stop or process 0 is gone. Signals are process 0's to answer."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        self.rank, self.pids = rank, []
        self.units = self.own(self.H)
        code = 0
        try:
            seen, cmd, grads = self.seen, self.ctrl[_CMD : _CMD + 8], None
            while True:
                spins = 0
                while cmd[0] == seen:
                    spins += 1
                    if spins & 0x3FF == 0:
                        self._check(spins)
                seen = cmd[0]
                if cmd[1] == STOP:
                    break
                if cmd[1] == UPDATE:  # this process's block of the step's gradients, just computed
                    args = tuple(self.arena.get("update/args", (int(cmd[2]),), np.float64).tolist())
                    with np.errstate(all="ignore"):
                        self.apply(grads, args, self.own)
                    self.sync()
                    continue
                T, B, has_masks, has_resets, has_y, has_w = int(cmd[2]), int(cmd[3]), *map(bool, cmd[4:8])
                x, y, state, masks, resets, wmasks = self._inputs(T, B, model)
                with np.errstate(all="ignore"):
                    _, _, cache = model.forward(x, y if has_y else None, tuple(state), masks if has_masks else None,
                                                resets if has_resets else None, team=self,
                                                wmasks=wmasks if has_w else None)
                    if cmd[1] == STEP:
                        grads, _ = model.backward(cache, team=self)
        except BaseException as e:  # tell process 0, which reports it and stops the run
            msg = f"{type(e).__name__}: {e}".encode()[: _ERR_LEN - 1]
            self.arena.mm[_ERR_AT : _ERR_AT + len(msg)] = msg
            code = 1
        finally:
            os._exit(code)


def _stopped(pids):
    """The processes of `pids` that are stopped (state T, or t when traced), per /proc (Linux)."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state in (b"T", b"t"):
            out.append(pid)
    return out


def _how_it_ended(status):
    """waitpid's status in words. _how_it_ended(9) == 'it was killed by SIGKILL'"""
    if os.WIFSIGNALED(status):
        return f"it was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"it exited with code {os.WEXITSTATUS(status)}"


def make_team(size, model, batch_size, seq_length, apply=None, shared=()):
    """A started ForkTeam of `size` processes for steps of (seq_length, batch_size), or SOLO for 1.

    apply(grads, args, share): the update that team.update() runs in every process; shared: dicts
    of arrays (the optimizer's state) that apply changes, moved into the shared memory with the
    parameters (the dicts are updated in place)."""
    if size <= 1:
        return SOLO
    L, H, V, G = model.num_layers, model.hidden_size, model.vocab_size, model.cell.gates * model.hidden_size
    f = model.dtype.itemsize
    per_layer = (3 * G + 4 * H) * (seq_length + 1) * batch_size + 4 * G * batch_size
    top = (2 * seq_length * batch_size + H) * V  # the logits, the probabilities and the decoder's gradient
    need = f * (3 * model.num_params() + L * per_layer + 2 * G * (V + H) + top) + 8 * seq_length * batch_size
    need += sum(a.nbytes for d in shared for a in d.values())
    team = ForkTeam(size, H, 2 * need + (16 << 20))  # room for a second slot of each name (a short chunk first)
    team.start(model, apply, shared)
    return team
