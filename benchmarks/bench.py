"""Speed benchmark: charrnn against PyTorch on this machine, side by side, in one run.

    python benchmarks/bench.py                 # everything (PyTorch rows when torch is installed)
    python benchmarks/bench.py --quick         # fewer repeats, one round
    python benchmarks/bench.py --large-gib 1   # also prepare and train on a 1 GiB generated file
    python benchmarks/bench.py --mpi           # data parallel: 1 process x 2 threads against 2 x 1
    python benchmarks/bench.py --breakdown     # where charrnn's step goes: products, waits, the rest

Where OPENBLAS_CORETYPE pins NumPy's OpenBLAS to older kernels (set on some shared machines),
NumPy's products run up to 2x slower than the CPU allows while PyTorch's MKL is unaffected;
the `blas:` line says which kernels ran. `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python
benchmarks/bench.py` measures with the kernels OpenBLAS picks for the CPU, as on a machine
without the pin. The `elementwise:` line gives NumPy's float32 tanh, exp and multiply rates on one
core: the rest of a step, beside the products, runs at those.

Each measurement runs in its own subprocess (so peak memory is per run and the two libraries never
share a process). Training throughput is steady state: two warm-up steps are excluded, then the
median over repeats of timed blocks of steps. Sampling is characters per second at batch 1.
"""

import argparse
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROWS = [  # (type, layers, hidden, batch, seq)
    ("lstm", 1, 512, 64, 100),
    ("lstm", 2, 256, 64, 64),
    ("gru", 1, 512, 64, 100),
    ("rnn", 1, 512, 64, 100),
]
VOCAB = 65  # tiny shakespeare's

# Where each module of an older checkout, whose modules sat in charrnn_cli/ itself, lives now:
# benchmarks/ab.py runs this file against such a checkout too.
LAYOUT = {"nn": {"cells": "cells", "model": "model", "optim": "optim"},
          "io": {"config": "config", "data": "data", "cache": "data", "vocab": "vocab"},
          "parallel": {"cores": "cores", "team": "team", "dist": "dist"},
          "training": {"loop": "training"}, "tools": {"sample": "sample"}}


def _alias_flat_layout():
    """Give an older checkout's modules this layout's names (charrnn_cli.nn.model for charrnn_cli.model)."""
    import importlib
    import types

    import charrnn_cli

    if os.path.isdir(os.path.join(os.path.dirname(charrnn_cli.__file__), "nn")):
        return  # this layout
    found = {}
    for pkg, modules in LAYOUT.items():  # the older modules first: charrnn_cli.training was one of them
        for new, old in modules.items():
            try:
                found[pkg, new] = importlib.import_module(f"charrnn_cli.{old}")
            except ModuleNotFoundError:  # a module the older checkout did not have yet
                pass
    for (pkg, new), module in found.items():
        parent = sys.modules.setdefault(f"charrnn_cli.{pkg}", types.ModuleType(f"charrnn_cli.{pkg}"))
        sys.modules[f"charrnn_cli.{pkg}.{new}"] = module
        setattr(parent, new, module)


try:
    _alias_flat_layout()
except ImportError:  # no charrnn_cli on the path yet
    pass


def peak_mb():
    """This process's peak resident memory in MB. Linux keeps ru_maxrss across exec, so a worker
    started by a driver that has imported PyTorch (machine()) would report the driver's 220 MB;
    VmHWM in /proc/self/status belongs to this program alone."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steady_rate(step, chars_per_step, steps, repeats):
    """Median characters per second over `repeats` timed blocks of `steps` calls, after 2 warm-up calls."""
    for _ in range(2):
        step()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * chars_per_step / (time.perf_counter() - t0))
    return statistics.median(rates)


# ---- workers: each runs in a fresh process and prints one JSON line ---------------------------


def train_config(mt, L, H, split=None):
    from charrnn_cli.io.config import from_dict

    return from_dict({"model": {"type": mt, "num_layers": L, "hidden_size": H}, "training": {"unit_split": split}})


def train_env(mt, L, H, split=None):
    """The environment `charrnn train` gives itself for this model: its BLAS threads (cores.py)."""
    try:
        from charrnn_cli.parallel.cores import THREAD_VARIABLES, plan_threads
    except ImportError:  # a checkout from before the team (benchmarks/ab.py)
        return dict(os.environ)
    cfg = train_config(mt, L, H, split)
    n = plan_threads(cfg.training, cfg.model)
    return dict(os.environ, **({var: str(n) for var in THREAD_VARIABLES} if n else {}))


def charrnn_step(mt, L, H, B, T, split=None):
    """One training step as `charrnn train` takes it, in one process or with its team (team.py) where
    it would use one; returns (step, close, processes). Run it in train_env's environment, as
    run_worker does."""
    import numpy as np

    from charrnn_cli.io.config import TrainingConfig
    from charrnn_cli.nn.model import CharRNN
    from charrnn_cli.nn.optim import clip_gradients, global_norm, make_optimizer

    try:
        from charrnn_cli.parallel.cores import team_size
        from charrnn_cli.parallel.team import make_team
    except ImportError:  # a checkout from before the team (benchmarks/ab.py)
        team_size, make_team = None, None
    try:
        from charrnn_cli.nn.optim import clip_and_step
    except ImportError:  # a checkout from before the update was shared out: process 0 alone takes it
        clip_and_step = None
    model = CharRNN(mt, VOCAB, H, L)
    opt = make_optimizer("adam", model.params, TrainingConfig())
    rng = np.random.default_rng(0)
    data = rng.integers(0, VOCAB, size=(T + 1, B))
    state = model.zero_state(B)
    cfg = train_config(mt, L, H, split)
    size = 1 if team_size is None else team_size(cfg.training, cfg.model)

    def apply(grads, args, share):  # as charrnn train's Run._update
        clip_and_step(opt, model.params, grads, "norm", 5.0, *args, share)

    if make_team is None:
        team = None
    elif clip_and_step is None:
        team = make_team(size, model, B, T)
    else:
        team = make_team(size, model, B, T, apply, list(opt.state.values()))
    kw = {} if team is None else {"team": team}
    # a checkout from before the softmax was shared out: process 0 alone takes it, and the targets
    shared_softmax = team is not None and "targets" in inspect.signature(team.begin).parameters
    targets = {"targets": data[1:]} if shared_softmax else {}

    def step():
        nonlocal state
        if team is not None:
            team.begin(data[:-1], state, None, None, **targets)
        loss, state, cache = model.forward(data[:-1], data[1:], state, **kw)
        grads, _ = model.backward(cache, **kw)
        if clip_and_step is None:
            clip_gradients(grads, "norm", 5.0, global_norm(grads))
            opt.step(model.params, grads, 0.002)
        else:
            team.update(apply, grads, 0.002, global_norm(grads), opt.t + 1)

    return step, (team.close if team is not None else (lambda: None)), size


def charrnn_train(mt, L, H, B, T, steps, repeats, split=None):
    """Training throughput as `charrnn train` gets it (charrnn_step)."""
    step, close, size = charrnn_step(mt, L, H, B, T, split)
    try:
        rate = steady_rate(step, B * T, steps, repeats)
    finally:
        close()
    return {"chars_per_sec": rate, "peak_mb": peak_mb(), "processes": size}


def charrnn_breakdown(mt, L, H, B, T, steps, split=None):
    """Where process 0's training step goes (charrnn_step, this checkout): its matrix products (every
    np.matmul call), its waits for the other processes of the team (ForkTeam.wait), and the rest
    (NumPy's elementwise work and Python). Means over `steps` steps after 2 warm-up steps, in ms;
    and the other processes' waits, the mean a step of the one that waited most (a slower process 0
    shows there). The model writes every product as np.matmul (cells.py), so wrapping it sees them all."""
    import mmap

    import numpy as np

    from charrnn_cli.parallel import team as team_module

    spent = {"products": 0.0}
    waits = np.frombuffer(mmap.mmap(-1, 4096), np.float64, count=64)  # seconds waited, by rank: shared by the fork
    matmul, wait = np.matmul, team_module.ForkTeam.wait

    def timed_matmul(*args, **kw):  # each process keeps its own sums: the helpers' are never read
        t0 = time.perf_counter()
        try:
            return matmul(*args, **kw)
        finally:
            spent["products"] += time.perf_counter() - t0

    def timed_wait(self):
        t0 = time.perf_counter()
        wait(self)
        waits[self.rank] += time.perf_counter() - t0

    np.matmul, team_module.ForkTeam.wait = timed_matmul, timed_wait
    step, close, size = charrnn_step(mt, L, H, B, T, split)
    rows = []
    try:
        for k in range(steps + 2):
            if k == 2:
                time.sleep(0.05)  # the helpers' last wait of the step before is counted
                before = waits.copy()
            spent["products"], waited = 0.0, waits[0]
            t0 = time.perf_counter()
            step()
            total, waited = time.perf_counter() - t0, waits[0] - waited
            if k >= 2:
                rows.append((total, spent["products"], waited, total - spent["products"] - waited))
        time.sleep(0.05)
        others = max([(waits[j] - before[j]) / steps for j in range(1, size)], default=0.0)
    finally:
        close()
        np.matmul, team_module.ForkTeam.wait = matmul, wait
    mean = [1e3 * statistics.fmean(r[j] for r in rows) for j in range(4)]  # means: the parts add up to the step
    return dict(zip(("step_ms", "products_ms", "waits_ms", "rest_ms"), mean), others_waits_ms=1e3 * others,
                processes=size)


def dp_train(mt, L, H, B, T, steps, repeats):
    """Training steps as `charrnn train` takes them, in one process or as one of an MPI job's:
    each process owns B / R streams and the gradients are averaged every step (dist.py).
    Rank 0 reports the global characters per second and the time the reduction took."""
    import numpy as np

    from charrnn_cli.io.config import TrainingConfig
    from charrnn_cli.parallel.dist import world
    from charrnn_cli.nn.model import CharRNN
    from charrnn_cli.nn.optim import clip_gradients, global_norm, make_optimizer

    comm = world()
    b = B // comm.size
    model = CharRNN(mt, VOCAB, H, L)
    opt = make_optimizer("adam", model.params, TrainingConfig())
    data = np.random.default_rng(comm.rank).integers(0, VOCAB, size=(T + 1, b))
    state = model.zero_state(b)
    reduce_s = [0.0, 0]
    timing = False

    def step():
        nonlocal state
        loss, state, cache = model.forward(data[:-1], data[1:], state)
        grads, _ = model.backward(cache)
        if timing:
            comm.barrier()  # time the reduction itself, not the wait for the slower process
        t = time.perf_counter()
        grads = comm.average_gradients(grads)
        comm.mean(loss)
        reduce_s[0] += time.perf_counter() - t
        reduce_s[1] += 1
        clip_gradients(grads, "norm", 5.0, global_norm(grads))
        opt.step(model.params, grads, 0.002)

    timing = False
    rate = steady_rate(step, B * T, steps, repeats)  # the real thing: no barrier
    timing = True
    reduce_s[:] = [0.0, 0]
    for _ in range(steps):
        step()
    return {"chars_per_sec": rate, "step_ms": 1e3 * B * T / rate, "reduce_ms": 1e3 * reduce_s[0] / reduce_s[1],
            "bytes": 4 * model.num_params(), "processes": comm.size}


def gates(mt):
    """G, the gate blocks of a cell type, from the cell itself: gates("lstm") == 4"""
    from charrnn_cli.nn.cells import make_cell

    return make_cell(mt).gates


def flop_per_char(mt, L, H, V=VOCAB):
    """The matrix-product FLOPs a training step spends per character: each layer's recurrent product
    forward, its transpose backward and the weight gradient (3 x 2 G H), the same three for every
    input product above layer 0 (layer 0's one-hot input is a lookup), and the decoder's three (3 x 2 V H).
    LSTM 1x512 on 65 characters: 6.49 MFLOP."""
    G = gates(mt) * H
    return 6 * G * H * L + 6 * G * H * (L - 1) + 6 * V * H


def sgemm(G, H, B, n, repeats):
    """GFLOP/s of the per-step product (G, H) @ (H, B) in float32, as the time loop calls it: median of blocks of n."""
    import numpy as np

    rng = np.random.default_rng(0)
    W = rng.standard_normal((G, H), dtype=np.float32)
    h = rng.standard_normal((H, B), dtype=np.float32)
    out = np.empty((G, B), np.float32)
    rates = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for _ in range(n):
            np.matmul(W, h, out=out)
        rates.append(2 * G * H * B * n / (time.perf_counter() - t0) / 1e9)
    return {"gflops": statistics.median(rates[1:])}


def charrnn_sample(mt, L, H, n_chars, repeats):
    import numpy as np

    from charrnn_cli.nn.model import CharRNN
    from charrnn_cli.tools.sample import generate
    from charrnn_cli.io.vocab import Vocab

    vocab = Vocab(range(40, 40 + VOCAB))  # includes "a"
    model = CharRNN(mt, VOCAB, H, L)
    rng = np.random.default_rng(0)
    for _ in generate(model, vocab, "a", 50, rng=rng):
        pass
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in generate(model, vocab, "a", n_chars, rng=rng):
            pass
        rates.append(n_chars / (time.perf_counter() - t0))
    return {"chars_per_sec": statistics.median(rates), "peak_mb": peak_mb()}


def torch_train(mt, L, H, B, T, steps, repeats):
    import torch

    torch.set_num_threads(os.cpu_count())
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[mt]
    rnn, dec = cls(VOCAB, H, L), torch.nn.Linear(H, VOCAB)
    params = list(rnn.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=0.002)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, VOCAB, (T + 1, B), generator=g)
    x = torch.nn.functional.one_hot(data[:-1], VOCAB).float()
    y = data[1:].reshape(-1)
    hx = None

    def step():
        nonlocal hx
        out, hx_new = rnn(x, hx)
        loss = torch.nn.functional.cross_entropy(dec(out).reshape(-1, VOCAB), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        hx = tuple(h.detach() for h in hx_new) if isinstance(hx_new, tuple) else hx_new.detach()

    return {"chars_per_sec": steady_rate(step, B * T, steps, repeats), "peak_mb": peak_mb()}


def torch_sample(mt, L, H, n_chars, repeats):
    import torch

    torch.set_num_threads(os.cpu_count())
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[mt]
    rnn, dec = cls(VOCAB, H, L), torch.nn.Linear(H, VOCAB)
    g = torch.Generator().manual_seed(0)

    def generate(n):
        hx, c = None, 0
        with torch.no_grad():
            for _ in range(n):
                x = torch.nn.functional.one_hot(torch.tensor([[c]]), VOCAB).float()
                out, hx = rnn(x, hx)
                p = torch.softmax(dec(out[0]), dim=-1)
                c = int(torch.multinomial(p, 1, generator=g))

    generate(50)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(n_chars)
        rates.append(n_chars / (time.perf_counter() - t0))
    return {"chars_per_sec": statistics.median(rates), "peak_mb": peak_mb()}


def large_file(path, gib, steps):
    """Prepare a generated UTF-8 file of `gib` GiB, then train a few steps on it."""
    import numpy as np

    from charrnn_cli.io.config import from_dict
    from charrnn_cli.io.cache import prepare
    from charrnn_cli.training.loop import train

    cache = tempfile.mkdtemp(prefix="charrnn-bench-cache-")
    t0 = time.perf_counter()
    corpus = prepare(path, cache)
    prep_s = time.perf_counter() - t0
    prep_peak = peak_mb()
    t0 = time.perf_counter()
    again = prepare(path, cache)  # the cache reused: the stamp compared and every index checked in range
    reuse_s = time.perf_counter() - t0
    assert again.reused
    size = os.path.getsize(path)
    cfg = from_dict({"data": {"path": path, "cache_dir": cache, "val_fraction": 0.0001},
                     "model": {"type": "lstm", "hidden_size": 512},
                     "training": {"batch_size": 64, "seq_length": 100, "max_steps": steps,
                                  "eval_every": steps, "eval_max_chars": 100000, "checkpoint_every": steps},
                     "output": {"dir": tempfile.mkdtemp(prefix="charrnn-bench-run-")}})
    train(cfg, quiet=True)
    return {"bytes": size, "chars": int(len(corpus.data)), "prepare_s": prep_s, "reuse_s": reuse_s,
            "prepare_mb_per_s": size / prep_s / 1e6, "prepare_peak_mb": prep_peak, "train_peak_mb": peak_mb(),
            "vocab": len(corpus.vocab), "np": np.__version__}


def make_large_file(path, gib):
    """Tiny shakespeare repeated, with a line of non-ASCII text every ~64 KiB, to `gib` GiB."""
    here = os.path.dirname(os.path.abspath(__file__))
    base = open(os.path.join(here, "..", "data", "tinyshakespeare.txt"), "rb").read()
    extra = "Ünïcödé — ☃ 漢字 ✓\n".encode("utf-8")
    block = bytearray()
    for i in range(0, len(base), 65536):
        block += base[i : i + 65536] + extra
    target = int(gib * (1 << 30))
    with open(path, "wb") as fh:
        written = 0
        while written < target:
            piece = bytes(block[: target - written])
            # never cut inside a multi-byte character
            while piece and (piece[-1] & 0xC0) == 0x80 or (piece and piece[-1] >= 0xC0):
                piece = piece[:-1]
            fh.write(piece)
            written += len(piece)
            if len(piece) < len(block):
                break


# ---- driver ---------------------------------------------------------------------------------


def run_worker(name, *args, env=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"worker {name}{args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def find_mpiexec():
    """The mpiexec beside this Python (the mpich wheel puts it in the venv's bin, on PATH only once
    the venv is activated), else the one on PATH; None if neither."""
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")


def run_mpi_worker(n, threads, name, *args):
    """The worker under `mpiexec -n n` with `threads` BLAS threads a process; rank 0's JSON line."""
    mpiexec = find_mpiexec()
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [mpiexec, "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker", name, json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"worker {name}{args} under mpiexec -n {n} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_mpi(rounds, steps, repeats):
    """Every row (and the default model) as 1 process x 2 BLAS threads against 2 MPI processes x 1
    thread (data parallel: the streams split), and against charrnn train's team (team.py: 2
    processes x 1 thread, the hidden units split)."""
    rows = ROWS + [("lstm", 2, 384, 32, 64)]
    if find_mpiexec() is None:
        raise SystemExit("--mpi needs mpiexec: pip install \".[mpi]\"")
    print(f"data parallel: Adam, float32; median of {repeats} blocks of {steps} steps after 2 warm-up steps; "
          f"each row the median of {rounds} alternating rounds; the reduction: reduce-scatter + allgather of "
          f"every gradient in one float32 buffer, and the loss\n")
    print("| model | batch x seq | 1 process x 2 threads ch/s | 2 processes x 1 thread ch/s | ratio | "
          "MB reduced per step | reduction ms | step ms (2 processes) | reduction share | "
          "team: units split ch/s | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mt, L, H, B, T in rows:
        one, two, team = [], [], []
        for _ in range(rounds):
            env_threads = os.environ.get("OPENBLAS_NUM_THREADS")
            os.environ["OPENBLAS_NUM_THREADS"] = "2"
            one.append(run_worker("dp_train", mt, L, H, B, T, steps, repeats))
            if env_threads is None:
                del os.environ["OPENBLAS_NUM_THREADS"]
            else:
                os.environ["OPENBLAS_NUM_THREADS"] = env_threads
            two.append(run_mpi_worker(2, 1, "dp_train", mt, L, H, B, T, steps, repeats))
            team.append(run_worker("charrnn_train", mt, L, H, B, T, steps, repeats, 2, env=train_env(mt, L, H, 2)))
        a = statistics.median(r["chars_per_sec"] for r in one)
        b = statistics.median(r["chars_per_sec"] for r in two)
        red = statistics.median(r["reduce_ms"] for r in two)
        step = statistics.median(r["step_ms"] for r in two)
        c = statistics.median(r["chars_per_sec"] for r in team)
        print(f"| {mt.upper()} {L}x{H} | {B} x {T} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x | "
              f"{two[0]['bytes'] / 1e6:.1f} | {red:.2f} | {step:.1f} | {100 * red / step:.1f}% | "
              f"{c:,.0f} | {c / a:.2f}x |", flush=True)


def bench_breakdown(rows, rounds, steps, split):
    """Where process 0's training step goes, per row (charrnn_breakdown): the round with the median step."""
    print(f"breakdown of process 0's training step: the mean of {steps} steps after 2 warm-up steps, each row "
          f"the round with the median step of {rounds} rounds in fresh processes. products: its np.matmul calls "
          f"(the one-hot input's gradient among them); GFLOP/s: the row's matrix-product FLOPs (as in the bound) "
          f"over that time, all processes together; waits: for the other processes of the team; the rest: NumPy's "
          f"elementwise work and Python; the others' waits: the mean a step of the other process that waited most "
          f"(for process 0)\n")
    print("| model | batch x seq | processes | step ms | products ms | products GFLOP/s | waits ms | the rest ms | "
          "the rest's share | the others' waits ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mt, L, H, B, T in rows:
        runs = [run_worker("charrnn_breakdown", mt, L, H, B, T, steps, split, env=train_env(mt, L, H, split))
                for _ in range(rounds)]
        med = sorted(runs, key=lambda r: r["step_ms"])[len(runs) // 2]  # the median round, whole
        gflops = flop_per_char(mt, L, H) * B * T / (med["products_ms"] / 1e3) / 1e9
        print(f"| {mt.upper()} {L}x{H} | {B} x {T} | {runs[0]['processes']} | {med['step_ms']:.1f} | "
              f"{med['products_ms']:.1f} | {gflops:.0f} | {med['waits_ms']:.1f} | {med['rest_ms']:.1f} | "
              f"{100 * med['rest_ms'] / med['step_ms']:.0f}% | {med['others_waits_ms']:.1f} |", flush=True)


# Issue 15's goals, read off the table: training at least 1.15x PyTorch on every row, LSTM 1x512 at
# 75% of the sgemm bound or more, sampling at least 4x PyTorch on every row.
GOALS = {"train": 1.15, "bound": 0.75, "sample": 4.0}


def goals_line(done):
    """One line saying which of the goals this run met, row by row.

    >>> goals_line([("LSTM 1x512", 1.29, 0.81, 15.0), ("LSTM 2x256", 1.10, 0.80, 29.6)])
    'goals (issue 15): training >= 1.15x PyTorch: missed (LSTM 2x256 at 1.10x); LSTM 1x512 >= 75% of the bound: met (81%); sampling >= 4x PyTorch: met (lowest 15.0x)'
    """
    short = [f"{name} at {r:.2f}x" for name, r, _, _ in done if r < GOALS["train"]]
    parts = [f"training >= {GOALS['train']}x PyTorch: " + (f"missed ({', '.join(short)})" if short else
                                                          f"met (lowest {min(r for _, r, _, _ in done):.2f}x)")]
    for name, _, share, _ in done:
        if name == "LSTM 1x512":
            parts.append(f"LSTM 1x512 >= {GOALS['bound']:.0%} of the bound: "
                         f"{'met' if share >= GOALS['bound'] else 'missed'} ({share:.0%})")
    lowest = min(s for _, _, _, s in done)
    parts.append(f"sampling >= {GOALS['sample']:g}x PyTorch: {'met' if lowest >= GOALS['sample'] else 'missed'} "
                 f"(lowest {lowest:.1f}x)")
    return "goals (issue 15): " + "; ".join(parts)


def has_torch():
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except Exception:
        return False


def blas_kernels():
    """Which BLAS kernels NumPy runs: OpenBLAS may be pinned to older ones by OPENBLAS_CORETYPE."""
    pinned = os.environ.get("OPENBLAS_CORETYPE")
    try:
        from threadpoolctl import threadpool_info

        for d in threadpool_info():
            if d.get("internal_api") == "openblas":
                return f"NumPy's OpenBLAS {d.get('version')}: {d.get('architecture')} kernels" + \
                    (f" (pinned by OPENBLAS_CORETYPE={pinned})" if pinned else "")
    except ImportError:
        pass
    return f"OPENBLAS_CORETYPE={pinned}" if pinned else "BLAS kernels as the library chooses them"


def elementwise(n, repeats):
    """float32 tanh, exp and multiply on one core, in ns an element (steady_rate: the median of
    `repeats` blocks of 100 calls on n elements), and the SIMD target NumPy dispatches float32 tanh
    to: the part of a step the products leave (see --breakdown) runs at these rates, which differ
    between machines (AVX-512 kernels) and, on a VM, between days (docs/bench-log.md)."""
    import numpy as np

    x = (np.random.default_rng(0).standard_normal(n) * 2).astype(np.float32)
    y = np.empty_like(x)
    below = -np.abs(x)  # exp of the same inputs each call: in place it would overflow to inf and time otherwise
    calls = {"tanh": lambda: np.tanh(x, y), "exp": lambda: np.exp(below, y), "multiply": lambda: np.multiply(x, x, y)}
    result = {name: 1e9 / steady_rate(call, n, 100, repeats) for name, call in calls.items()}
    try:  # NumPy's own record of its dispatch (private: absent on some versions)
        from numpy._core._multiarray_umath import __cpu_targets_info__ as targets

        result["target"] = targets["tanh"]["ff"]["current"]
    except (ImportError, KeyError, TypeError):
        result["target"] = "unknown"
    return result


def elementwise_line():
    e = run_worker("elementwise", 65536, 7)
    return (f"elementwise: float32 tanh {e['tanh']:.2f}, exp {e['exp']:.2f}, multiply {e['multiply']:.2f} ns "
            f"an element on one core (NumPy's {e['target']} kernels; 64K elements, median of 7)")


def print_header():
    """What every table is measured on: the machine, the BLAS kernels, NumPy's elementwise rates."""
    print(f"machine: {machine()}")
    print(f"blas: {blas_kernels()}")
    print(elementwise_line())


def machine():
    import platform

    import numpy as np

    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}"
    if has_torch():
        import torch

        info += f", PyTorch {torch.__version__}"
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    ap.add_argument("--large-gib", type=float, default=0.0, help="also benchmark a generated file of this size")
    ap.add_argument("--sample-chars", type=int, default=2000, help="characters per sampling run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per row; medians are reported")
    ap.add_argument("--mpi", action="store_true", help="only the data-parallel table (needs the mpi extra)")
    ap.add_argument("--breakdown", action="store_true",
                    help="only where charrnn's training step goes: products, waits, the rest (process 0)")
    ap.add_argument("--unit-split", type=int, default=None, metavar="N",
                    help="charrnn's training.unit_split (default: null, what `charrnn train` picks; 1: one process)")
    ap.add_argument("--rows", default="", help="only the rows whose name contains one of these, comma-separated "
                    "(for example lstm or 'lstm 2x256'); more rounds of fewer rows where the machine is noisy")
    a = ap.parse_args()
    if a.worker:
        result = globals()[a.worker](*json.loads(a.args))
        if os.environ.get("PMI_RANK", "0") == "0":  # under mpiexec, rank 0 reports
            print(json.dumps(result))
        return
    if a.mpi:
        print_header()
        bench_mpi(1 if a.quick else a.rounds, *((3, 3) if a.quick else (5, 5)))
        return

    steps, repeats = (3, 3) if a.quick else (5, 5)
    if a.quick:
        a.rounds = 1
    use_torch = has_torch() and not a.no_torch
    wanted = [w.strip().lower() for w in a.rows.split(",") if w.strip()]
    rows = [r for r in ROWS if not wanted or any(w in f"{r[0]} {r[1]}x{r[2]}" for w in wanted)]
    if not rows:
        raise SystemExit(f"--rows {a.rows!r} matches none of: " + ", ".join(f"{r[0]} {r[1]}x{r[2]}" for r in ROWS))
    print_header()
    if a.breakdown:
        bench_breakdown(rows, a.rounds, 3 * steps, a.unit_split)
        return
    print(f"training: Adam, global-norm clip 5, float32; median of {repeats} blocks of {steps} steps "
          f"after 2 warm-up steps; sampling: {a.sample_chars} characters at batch 1, median of {repeats}; "
          f"each row the median of {a.rounds} alternating rounds, every run in a fresh process\n")
    print("sgemm bound: the per-step product (G*H, H) @ (H, B) in float32, measured each round beside the rows, "
          "divided by the row's matrix-product FLOPs per character (LSTM 1x512: 6.49 M); 'of bound' is charrnn's "
          "training rate as a share of it\n")
    print("processes: how many processes share each charrnn training step (training.unit_split, team.py), "
          "each with the BLAS threads `charrnn train` gives it\n")
    head = "| model | batch x seq | processes | charrnn train ch/s | peak MB | sgemm GFLOP/s | of bound |"
    sep = "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    if use_torch:
        head += " PyTorch train ch/s | ratio |"
        sep += " ---: | ---: |"
    head += " charrnn sample ch/s |"
    sep += " ---: |"
    if use_torch:
        head += " PyTorch sample ch/s | ratio |"
        sep += " ---: | ---: |"
    print(head)
    print(sep)
    done = []  # (row name, training ratio, share of the bound, sampling ratio)
    for mt, L, H, B, T in rows:
        # alternate the two libraries over several rounds, so drift on a shared machine hits both
        rates = {"ours": [], "theirs": [], "s_ours": [], "s_theirs": [], "peak": [], "gflops": [], "procs": []}
        for _ in range(a.rounds):
            rates["gflops"].append(run_worker("sgemm", gates(mt) * H, H, B, 200, repeats)["gflops"])
            r = run_worker("charrnn_train", mt, L, H, B, T, steps, repeats, a.unit_split,
                           env=train_env(mt, L, H, a.unit_split))
            rates["ours"].append(r["chars_per_sec"])
            rates["procs"].append(r["processes"])
            rates["peak"].append(r["peak_mb"])
            if use_torch:
                rates["theirs"].append(run_worker("torch_train", mt, L, H, B, T, steps, repeats)["chars_per_sec"])
            rates["s_ours"].append(run_worker("charrnn_sample", mt, L, H, a.sample_chars, repeats)["chars_per_sec"])
            if use_torch:
                rates["s_theirs"].append(run_worker("torch_sample", mt, L, H, a.sample_chars, repeats)["chars_per_sec"])
        med = {k: statistics.median(v) for k, v in rates.items() if v}
        bound = med["gflops"] * 1e9 / flop_per_char(mt, L, H)
        line = (f"| {mt.upper()} {L}x{H} | {B} x {T} | {max(rates['procs'])} | {med['ours']:,.0f} | {max(rates['peak']):,.0f} | "
                f"{med['gflops']:.0f} | {100 * med['ours'] / bound:.0f}% |")
        if use_torch:
            line += f" {med['theirs']:,.0f} | {med['ours'] / med['theirs']:.2f}x |"
        line += f" {med['s_ours']:,.0f} |"
        if use_torch:
            line += f" {med['s_theirs']:,.0f} | {med['s_ours'] / med['s_theirs']:.2f}x |"
            done.append((f"{mt.upper()} {L}x{H}", med["ours"] / med["theirs"], med["ours"] / bound,
                         med["s_ours"] / med["s_theirs"]))
        print(line, flush=True)
    if done:
        print("\n" + goals_line(done))
    if a.large_gib > 0:
        folder = tempfile.mkdtemp(prefix="charrnn-bench-")
        path = os.path.join(folder, "large.txt")
        make_large_file(path, a.large_gib)
        r = run_worker("large_file", path, a.large_gib, 20)
        print(f"\nlarge file: {r['bytes'] / (1 << 30):.2f} GiB, {r['chars']:,} characters, vocabulary {r['vocab']}: "
              f"prepared in {r['prepare_s']:.1f} s ({r['prepare_mb_per_s']:.0f} MB/s), its cache checked and "
              f"reused in {r['reuse_s']:.2f} s, peak memory "
              f"{r['prepare_peak_mb']:.0f} MB preparing, {r['train_peak_mb']:.0f} MB after 20 training steps "
              f"(LSTM 1x512, batch 64 x 100)")
        os.remove(path)


if __name__ == "__main__":
    main()
