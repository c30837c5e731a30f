"""The team interface in one process: every unit its own, every buffer private, every sync free.

The cells and the model take a `team` (team.py: the processes sharing one training step); in one
process it is SOLO, whose every call is the identity or nothing, so the math reads the same.
"""

import numpy as np


class TeamError(RuntimeError):
    """A process of the team failed or vanished: the message says which and why."""


class TeamStalled(TeamError):
    """Process 0 gave up waiting for a helper because a signal asked the run to stop (a helper
    that is stopped, SIGSTOP or Ctrl-Z, would otherwise hold the run forever)."""


class Solo:
    """One process: every unit is its own, every buffer private, every sync free."""

    rank, size = 0, 1
    units = slice(None)

    def own(self, n):
        return slice(None)

    def rows(self, W, gates):
        return W

    def transposed(self, W, gates, ws, name, copy=True):
        """W^T as a contiguous copy in ws[name] (a per-step product runs faster from it), or with
        copy=False the view
        (for one product per chunk, where the copy would cost more than it saves)."""
        if not copy:
            return W.T
        WT = ws.get(name, W.T.shape, W.dtype)
        np.copyto(WT, W.T)
        return WT

    def buffer(self, ws, name, shape, dtype):
        return ws.get(name, shape, dtype)

    def put_rows(self, name, own, gates):
        return own

    def from_first(self, name, a, shape, dtype):
        return np.ascontiguousarray(a)

    def begin_update(self, *args):
        """The update's share of this process: all of it (None)."""
        return None

    def end_update(self):
        pass

    def update(self, apply, grads, *args):
        apply(grads, args, self.begin_update(*args))
        self.end_update()

    def sync(self):
        pass

    def arrive(self):
        pass

    def wait(self):
        pass

    def finish(self):
        pass

    def begin(self, x, state, masks, resets, backward=True, targets=None, wmasks=None):
        pass

    def close(self):
        pass


SOLO = Solo()

# The control block: int64 slots at the start of the shared memory, one cache line per writer.
