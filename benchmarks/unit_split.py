"""Experiment (issue 15), not a feature: how much faster is an LSTM forward pass over one chunk when
two processes split the hidden units between them, instead of one process using two BLAS threads?

    python benchmarks/unit_split.py              # LSTM 1x512, batch 64 x 100, and 256 at 64 x 64
    python benchmarks/unit_split.py 512 64 100   # one shape: hidden, batch, seq

NumPy runs each elementwise call on one core, so in one process a step's pointwise equations leave
the second core idle; threads cannot take half of them cheaply (docs/speed.md: a handoff costs about
150 us on a 2-core VM). Here each of two forked processes, with one BLAS thread each, owns half of
the hidden units: its rows of W_hh (all four gate blocks), its half of the gates, c and h. They
share h and c through anonymous shared memory and, after every step, wait for each other by
spinning on a shared step counter, so neither sleeps. The forward pass is the cell's own
`LSTMCell._gates` on each half; the time is the median over 6 chunks, each measurement in a fresh
process. Only the forward pass: the backward pass splits the same way, with its W_hh^T product split
by output rows.
"""

import json
import mmap
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPEATS = 6


def shared(shape, dtype):
    import numpy as np

    n = int(np.prod(shape))
    return np.frombuffer(mmap.mmap(-1, n * np.dtype(dtype).itemsize), dtype=dtype, count=n).reshape(shape)


def inputs(H, B, T):
    import numpy as np

    rng = np.random.default_rng(0)
    Wh = (rng.standard_normal((4 * H, H)) * 0.05).astype(np.float32)  # internal (i, f, o, g) blocks
    xw = rng.standard_normal((T, 4 * H, B)).astype(np.float32)
    return Wh, xw


def one_process(H, B, T):
    """The cell's own forward pass, BLAS threads as the machine sets them."""
    import numpy as np

    from charrnn_cli.cells import LSTMCell, Workspace

    Wh, xw = inputs(H, B, T)
    cell, ws = LSTMCell(), Workspace()
    state = (np.zeros((H, B), np.float32), np.zeros((H, B), np.float32))
    times = []
    for _ in range(REPEATS + 1):
        t0 = time.perf_counter()
        cell.forward(xw, state, Wh, None, ws)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def two_processes(H, B, T):
    """Units [j H/2, (j+1) H/2) in process j; h and c shared; a spin barrier after every step."""
    import numpy as np

    from charrnn_cli.cells import LSTMCell

    Wh, xw = inputs(H, B, T)
    h = H // 2
    HS, C = shared((H, T + 1, B), np.float32), shared((T + 1, H, B), np.float32)
    done = shared((2, 8), np.int64)  # done[j, 0]: steps process j has finished (a cache line each)

    def run(j):
        rows = np.concatenate([np.arange(k * H + j * h, k * H + (j + 1) * h) for k in range(4)])
        W, X = np.ascontiguousarray(Wh[rows]), np.ascontiguousarray(xw[:, rows])  # (4h, H), (T, 4h, B)
        A, TC = np.empty((T, 4 * h, B), np.float32), np.empty((T, h, B), np.float32)
        units, other, count, times = slice(j * h, (j + 1) * h), 1 - j, 0, []
        for _ in range(REPEATS + 1):
            t0 = time.perf_counter()
            for t in range(T):
                np.matmul(W, HS[:, t], out=A[t])  # this process's gate rows from the whole h_{t-1}
                LSTMCell._gates(A[t], C[t, units], A[t], C[t + 1, units], TC[t], HS[units, t + 1])(X[t])
                count += 1
                done[j, 0] = count
                while done[other, 0] < count:  # spin: a sleeping process wakes too slowly
                    pass
            times.append(time.perf_counter() - t0)
        return statistics.median(times[1:])

    pid = os.fork()
    if pid == 0:
        try:
            run(1)
        finally:
            os._exit(0)
    result = run(0)
    os.waitpid(pid, 0)
    return result


def measure(kind, H, B, T):
    env = dict(os.environ)
    if kind == "two_processes":
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"
    code = (f"import sys, json; sys.path.insert(0, {os.path.dirname(HERE)!r}); sys.path.insert(0, {HERE!r}); "
            f"import unit_split; print(json.dumps(unit_split.{kind}({H}, {B}, {T})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout)


def main():
    shapes = [tuple(int(a) for a in sys.argv[1:4])] if len(sys.argv) >= 4 else [(512, 64, 100), (256, 64, 64)]
    print(f"LSTM forward over one chunk, median of {REPEATS}; 3 alternating rounds, each in fresh processes")
    print("| hidden | batch x seq | 1 process x 2 BLAS threads ms | 2 processes x 1 thread, units split ms | ratio |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for H, B, T in shapes:
        one, two = [], []
        for _ in range(3):
            one.append(measure("one_process", H, B, T))
            two.append(measure("two_processes", H, B, T))
        a, b = statistics.median(one), statistics.median(two)
        print(f"| {H} | {B} x {T} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
