"""What a ring allreduce predicts for data-parallel charrnn on a cluster, from a step measured here.

    python benchmarks/scaling.py            # measure each row's step here, then print the table
    python benchmarks/scaling.py --quick

charrnn averages the gradients once per step, after the backward pass (no overlap with compute).
A ring allreduce of N bytes over R processes, each link of bandwidth bw and latency a, takes

    t_comm(R) = 2 (R - 1) a + 2 (R - 1) / R * N / bw

(reduce-scatter then allgather, as dist.py does: each process sends and receives 2 (R - 1) / R of
the buffer). With every process keeping the same streams as R grows (batch_size = R x b, weak
scaling), a step takes t_step + t_comm(R), so the scaling efficiency is

    E(R) = t_step / (t_step + t_comm(R))

t_step is measured here: one process, one BLAS thread, b = batch / 2 streams (the share of one
process in the benchmark's 2-process run). a = 20 us (TCP on a data-centre network); a faster
fabric only helps. Hosts with several processes share their link: divide bw by processes per host.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import ROWS, machine  # noqa: E402

LATENCY_S = 20e-6
PROCESSES = (2, 8, 32, 128)
LINKS_GBIT = (10, 25, 100)


def t_comm(nbytes, R, gbit, latency=LATENCY_S):
    """Ring allreduce seconds. t_comm(1e6, 2, 8) == 2 * 20e-6 + 1e6 / 1e9"""
    return 2 * (R - 1) * latency + 2 * (R - 1) / R * nbytes / (gbit * 1e9 / 8)


def measure(mt, L, H, B, T, steps, repeats):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(HERE, "bench.py"), "--worker", "dp_train",
           json.dumps([mt, L, H, B // 2, T, steps, repeats])]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    steps, repeats = (3, 3) if a.quick else (5, 5)
    print(f"machine: {machine()}")
    print(f"ring allreduce, latency {LATENCY_S * 1e6:.0f} us; weak scaling (each process keeps batch / 2 streams); "
          f"efficiency = t_step / (t_step + t_comm)\n")
    head = "| model | streams per process | MB per step | t_step ms |"
    sep = "| --- | ---: | ---: | ---: |"
    for g in LINKS_GBIT:
        for R in PROCESSES:
            head += f" {g} Gb/s, R={R} |"
            sep += " ---: |"
    print(head)
    print(sep)
    for mt, L, H, B, T in ROWS + [("lstm", 2, 384, 32, 64)]:
        r = measure(mt, L, H, B, T, steps, repeats)
        t_step = r["step_ms"] / 1e3
        line = f"| {mt.upper()} {L}x{H} | {B // 2} x {T} | {r['bytes'] / 1e6:.1f} | {1e3 * t_step:.0f} |"
        for g in LINKS_GBIT:
            for R in PROCESSES:
                line += f" {100 * t_step / (t_step + t_comm(r['bytes'], R, g)):.0f}% |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
