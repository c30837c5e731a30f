"""A/B: training speed of two checkouts of charrnn, side by side on this machine.

    git worktree add /tmp/before HEAD~1
    python benchmarks/ab.py /tmp/before . --model lstm 1 512 64 100 --rounds 6
    python benchmarks/ab.py . . --a-split 1 --rounds 6     # one process against the team, same code

On a shared or virtual machine a single measurement moves by 10-25%, and the drift hits whatever
runs at the time; alternating the two checkouts in fresh processes, round after round (A B, then
B A), spreads the drift over both. Each process runs bench.py's training measurement (Adam,
clipping, 2 warm-up steps, the median of 5 blocks of 3 steps) with charrnn_cli imported from its
checkout; the script prints both medians, their ratio and the spread of the per-round ratios. This is how docs/bench-log.md's "A/B" figures were measured.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# bench.py's own training measurement (its charrnn_train worker: Adam, clipping, 2 warm-up steps,
# median of 5 blocks of 3 steps), with charrnn_cli imported from the checkout given
WORKER = ("import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]); import bench; "
          "split = json.loads(sys.argv[8]); "
          "print(json.dumps(bench.charrnn_train(sys.argv[3], *map(int, sys.argv[4:8]), 3, 5, split)['chars_per_sec']))")

# the BLAS threads `charrnn train` would set for the checkout, computed with that checkout's code
ENV = ("import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]); import bench; "
       "print(json.dumps(bench.train_env(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6]))))")


def rate(checkout, model, split):
    mt, L, H = model[:3]
    where = [os.path.abspath(checkout), HERE]
    env = subprocess.run([sys.executable, "-c", ENV, *where, mt, L, H, json.dumps(split)], capture_output=True,
                         text=True, check=True)
    out = subprocess.run([sys.executable, "-c", WORKER, *where, *map(str, model), json.dumps(split)],
                         capture_output=True, text=True, env=json.loads(env.stdout))
    if out.returncode:
        raise SystemExit(f"{checkout}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="checkout A (the folder holding charrnn_cli/)")
    ap.add_argument("b", help="checkout B")
    ap.add_argument("--model", nargs=5, default=["lstm", "1", "512", "64", "100"],
                    metavar=("TYPE", "LAYERS", "HIDDEN", "BATCH", "SEQ"), help="default: lstm 1 512 64 100")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--a-split", type=int, default=None, metavar="N", help="training.unit_split for A (default: null)")
    ap.add_argument("--b-split", type=int, default=None, metavar="N", help="training.unit_split for B (default: null)")
    args = ap.parse_args()
    for d in (args.a, args.b):
        if not os.path.isdir(os.path.join(d, "charrnn_cli")):
            raise SystemExit(f"{d} holds no charrnn_cli/")
    ra, rb = [], []
    for r in range(args.rounds):
        order = [(args.a, ra, args.a_split), (args.b, rb, args.b_split)]
        for checkout, rates, split in order if r % 2 == 0 else order[::-1]:
            rates.append(rate(checkout, args.model, split))
    a, b = statistics.median(ra), statistics.median(rb)
    ratios = [y / x for x, y in zip(ra, rb)]
    mt, L, H, B, T = args.model
    print(f"{mt} {L}x{H}, batch {B} x {T}, {args.rounds} rounds: A {a:,.0f} ch/s, B {b:,.0f} ch/s, "
          f"B/A {b / a:.3f} (per round {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
