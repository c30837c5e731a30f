"""One process or many: the small interface the training loop uses to train data-parallel.

`mpiexec -n R charrnn train config.yaml` (or `srun`, or any MPI launcher) starts R processes;
each owns a contiguous block of batch_size / R streams, computes the gradient of its block's
mean loss, and the processes average their gradients every step. The loop calls the same
methods whether it holds `Single` (one process: every call is free) or `MPIWorld`, in the
style of Horovod's few calls:

    rank, size, block          who this process is and which streams it owns
    is_writer                  rank 0 alone prints, logs and writes checkpoints
    average_gradients(grads)   one reduction per step over all parameters in one buffer
    mean(x), sum(xs), max(x)   small values every process must agree on
    from_writer(obj)           rank 0's value (its clock, its stop decision, its errors) everywhere
    gather_streams(state)      the carried state of all B streams, on the writer
    check_identical(params)    every process holds the same parameters, bit for bit

Bitwise-identical parameters need bitwise-identical averaged gradients, which MPI's Allreduce
does not promise. average_gradients uses Reduce_scatter_block then Allgather: each element of the
sum is computed by exactly one process and then copied to all, so every process gets the same
bits, at a ring allreduce's bandwidth (2 (R - 1) / R of the buffer per process).

A plain `charrnn train` never imports mpi4py. A process started by an MPI launcher with more than
one process (the launcher's environment says so) imports it and fails with one line if it is
missing, rather than running R independent copies that fight over the same files.
"""

import socket
import zlib

import numpy as np

from .cores import launcher_size  # how many processes the launcher started (stdlib only, read before NumPy loads)


class DistError(RuntimeError):
    """The processes cannot train together: the message says why."""


def world(environ=None):
    """Single() for a plain run; MPIWorld() for a job of several processes."""
    size = launcher_size(environ)
    if size <= 1:
        return Single()
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistError(f"started by an MPI launcher with {size} processes, but mpi4py is not installed: "
                        f"pip install \"charrnn[mpi]\" (or run charrnn without the launcher)") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() != size:
        raise DistError(f"the launcher started {size} processes but mpi4py's MPI sees {comm.Get_size()}: "
                        f"mpi4py was built for another MPI than the launcher's mpiexec")
    return MPIWorld(comm, MPI)


def split(n, size, rank):
    """The contiguous block [a, b) of range(n) that process `rank` of `size` owns. split(10, 4, 3) == (7, 10)"""
    return n * rank // size, n * (rank + 1) // size


class Single:
    """One process: owns every stream; every collective is the identity."""

    rank, size, is_writer, hosts = 0, 1, True, 1

    def block(self, n):
        return 0, n

    def average_gradients(self, grads):
        return grads

    def mean(self, x):
        return x

    def sum(self, xs):
        return xs

    def max(self, x):
        return x

    def from_writer(self, obj):
        return obj

    def gather_streams(self, state):
        return state

    def check_identical(self, params):
        pass

    def barrier(self):
        pass

    def abort(self, code):
        raise SystemExit(code)


class MPIWorld:
    """Several processes over MPI (mpi4py): see the module docstring."""

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_writer = self.rank == 0
        self.hosts = len(set(comm.allgather(socket.gethostname())))
        self._flat = None  # the gradient buffer, padded to a multiple of size
        self._part = None

    def block(self, n):
        return split(n, self.size, self.rank)

    def average_gradients(self, grads):
        """The mean over processes of each gradient (dict of arrays), as views of one buffer."""
        names = list(grads)
        n = sum(grads[k].size for k in names)
        dtype = grads[names[0]].dtype
        padded = -(-n // self.size) * self.size
        if self._flat is None or self._flat.size != padded or self._flat.dtype != dtype:
            self._flat = np.zeros(padded, dtype=dtype)
            self._part = np.empty(padded // self.size, dtype=dtype)
        flat, part, off = self._flat, self._part, 0
        for k in names:
            g = grads[k]
            flat[off : off + g.size] = g.reshape(-1)
            off += g.size
        mpi_type = self.MPI.FLOAT if dtype == np.float32 else self.MPI.DOUBLE
        self.comm.Reduce_scatter_block([flat, mpi_type], [part, mpi_type], op=self.MPI.SUM)
        part *= dtype.type(1.0 / self.size)
        self.comm.Allgather([part, mpi_type], [flat, mpi_type])
        out, off = {}, 0
        for k in names:
            out[k] = flat[off : off + grads[k].size].reshape(grads[k].shape)
            off += grads[k].size
        return out

    def mean(self, x):
        """The mean of a float over processes, summed in rank order: the same bits everywhere."""
        return float(sum(self.comm.allgather(float(x)))) / self.size

    def sum(self, xs):
        """Elementwise sums of a tuple of floats over processes, in rank order."""
        rows = self.comm.allgather(tuple(float(x) for x in xs))
        return tuple(sum(r[i] for r in rows) for i in range(len(xs)))

    def max(self, x):
        return max(self.comm.allgather(x))

    def from_writer(self, obj):
        return self.comm.bcast(obj, root=0)

    def gather_streams(self, state):
        """(L, B, H) arrays of all streams on the writer (None elsewhere), from each process's (L, b, H)."""
        parts = self.comm.gather(state, root=0)
        if not self.is_writer:
            return None
        return tuple(np.concatenate([p[j] for p in parts], axis=1) for j in range(len(state)))

    def check_identical(self, params):
        """Raise DistError when the processes' parameters differ (a CRC of their bytes, compared)."""
        crc = 0
        for k in sorted(params):
            crc = zlib.crc32(np.ascontiguousarray(params[k]).view(np.uint8), crc)
        crcs = self.comm.allgather(crc)
        if len(set(crcs)) != 1:
            raise DistError(f"the processes' parameters differ (CRCs {', '.join(f'{c:08x}' for c in crcs)}): "
                            f"the data-parallel run went out of step; stopped")

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code):
        self.comm.Abort(code)


def on_writer(comm, fn, *args):
    """fn(*args) run by the writer alone; its result, or the exception it raised, on every
    process, so a problem only the writer sees (its folder, its disk) stops all of them alike."""
    if comm.size == 1:
        return fn(*args)
    outcome = None
    if comm.is_writer:
        try:
            outcome = ("ok", fn(*args))
        except BaseException as e:  # noqa: B036 - a signal or an error: every process must see it
            outcome = ("error", e)
    outcome = comm.from_writer(outcome)
    if outcome[0] == "error":
        try:
            outcome[1].shared = True  # every process raises it: the job can end cleanly
        except AttributeError:
            pass
        raise outcome[1]
    return outcome[1]
