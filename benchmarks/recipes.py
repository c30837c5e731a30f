"""Compare training recipes by validation loss at equal characters seen, not by the clock.

    python benchmarks/recipes.py                       # every recipe, 3M characters, seed 42
    python benchmarks/recipes.py --chars 6e6 --seeds 42 43 --only default,seq128
    python benchmarks/recipes.py --list

Each recipe is the default config (configs/shakespeare.yaml) with a few keys changed; it trains on
tiny shakespeare for a fixed number of characters (max_steps = chars / (batch x seq), the cosine
decaying over those steps, no time limit) and is scored on the whole validation split (the last
10%, 111,538 predicted characters, eval_share off), so the figure follows from the recipe and the
seed alone: the same on a quiet or a busy machine, a fast or a slow one. The table gives each
recipe's final and best validation loss (nats/char), the mean over seeds, and the characters a
second it trained at here, which is machine-dependent and is what turns "better at equal
characters" into "better in 10 minutes". Each run is a `charrnn train` in its own process; runs
go one after another, and their run folders are kept under --out.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The default until 2026-12-06, on which the first tables were measured: no warm-up, peak rate 0.004,
# dropout 0.4.
OLD = {"training.warmup_steps": 0, "training.learning_rate": 0.004, "model.dropout": 0.4}


def old(**sets):
    """Overrides on top of the old default (the keys spelled with __ for the dot)."""
    return dict(OLD, **{k.replace("__", "."): v for k, v in sets.items()})


# name: (what it changes, --set overrides on top of the default, configs/shakespeare.yaml)
RECIPES = {
    "default": ("the default: LSTM 2x384, dropout 0.2, batch 32 x 64, Adam 0.006 after a 200-step warm-up, "
                "cosine to 3%", {}),
    "old-default": ("the default until 2026-12-06: dropout 0.4, no warm-up, Adam 0.004", old()),
    "seq128": ("old default, BPTT over 128 characters (batch 32)", old(training__seq_length=128)),
    "seq128-b16": ("old default, BPTT over 128, batch 16 (the same characters a step)",
                   old(training__seq_length=128, training__batch_size=16)),
    "b64": ("old default, batch 64 x 64, learning rate 0.006",
            old(training__batch_size=64, training__learning_rate=0.006)),
    "lr6": ("old default, learning rate 0.006", old(training__learning_rate=0.006)),
    "lr3": ("old default, learning rate 0.003", old(training__learning_rate=0.003)),
    "drop3": ("old default, dropout 0.3", old(model__dropout=0.3)),
    "drop5": ("old default, dropout 0.5", old(model__dropout=0.5)),
    "h512": ("old default, LSTM 2x512", old(model__hidden_size=512)),
    "l3": ("old default, LSTM 3x384", old(model__num_layers=3)),
    "warmup": ("old default, linear warm-up over 100 steps", old(training__warmup_steps=100)),
    "beta2": ("old default, Adam beta2 0.99", old(training__beta2=0.99)),
    "clip1": ("old default, gradient norm clipped at 1", old(training__grad_clip=1.0)),
    "fbias1": ("old default, forget-gate bias started at 1", old(model__forget_bias=1.0)),
    "warmup-lr6": ("warm-up over 200 steps, learning rate 0.006, dropout 0.4",
                   {"training.warmup_steps": 200, "training.learning_rate": 0.006, "model.dropout": 0.4}),
    "warmup-lr8": ("warm-up over 300 steps, learning rate 0.008, dropout 0.4",
                   {"training.warmup_steps": 300, "training.learning_rate": 0.008, "model.dropout": 0.4}),
    "warmup-lr6-wd": ("warm-up over 200 steps, learning rate 0.006, dropout 0.4, weight decay 0.1",
                      {"training.warmup_steps": 200, "training.learning_rate": 0.006, "model.dropout": 0.4,
                       "training.weight_decay": 0.1}),
    "warmup-lr6-drop3": ("warm-up over 200 steps, learning rate 0.006, dropout 0.3 (the default of 2026-12-06)",
                         {"training.warmup_steps": 200, "training.learning_rate": 0.006, "model.dropout": 0.3}),
    "warmup-lr6-ln": ("warm-up over 200 steps, learning rate 0.006, dropout 0.4, layer-normalised gates (one process)",
                      {"training.warmup_steps": 200, "training.learning_rate": 0.006, "model.dropout": 0.4,
                       "model.layer_norm": True}),
    "cuts": ("dropout 0.3, each epoch's first chunk 1 to 64 characters long (training.random_cuts)",
             {"model.dropout": 0.3, "training.random_cuts": True}),
    "wdrop2": ("dropout 0.3 plus weight drop 0.2 of the recurrent weights (model.weight_drop)",
               {"model.dropout": 0.3, "model.weight_drop": 0.2}),
    "wdrop-only": ("dropout on the recurrent weights only: weight drop 0.3, dropout 0",
                   {"model.weight_drop": 0.3, "model.dropout": 0.0}),
    "drop2": ("dropout 0.2 (the default since 2026-12-07)", {"model.dropout": 0.2}),
    "h256": ("dropout 0.3, LSTM 2x256 (faster: compare at equal minutes, not characters)",
             {"model.dropout": 0.3, "model.hidden_size": 256}),
    "emb32": ("dropout 0.3, an input embedding of 32 numbers a character (model.embedding)",
              {"model.dropout": 0.3, "model.embedding": 32}),
    "emb64": ("dropout 0.3, an input embedding of 64 numbers a character (model.embedding)",
              {"model.dropout": 0.3, "model.embedding": 64}),
    "warmup-drop3": ("old default, warm-up over 100 steps, dropout 0.3",
                     old(training__warmup_steps=100, model__dropout=0.3)),
    "warmup-clip1": ("old default, warm-up over 100 steps, gradient norm clipped at 1",
                     old(training__warmup_steps=100, training__grad_clip=1.0)),
    "warmup-b16": ("old default, warm-up over 200 steps, batch 16 x 64 (twice the steps)",
                   old(training__warmup_steps=200, training__batch_size=16)),
    "warmup-wd": ("old default, warm-up over 100 steps, weight decay 0.1 (AdamW)",
                  old(training__warmup_steps=100, training__weight_decay=0.1)),
    "warmup-ln": ("old default, warm-up over 100 steps, layer-normalised gates (one process)",
                  old(training__warmup_steps=100, model__layer_norm=True)),
    "warmup-beta2": ("old default, warm-up over 100 steps, Adam beta2 0.99",
                     old(training__warmup_steps=100, training__beta2=0.99)),
}


def yaml_value(v):
    return json.dumps(v)


def run(name, overrides, chars, seed, out):
    """Train one recipe; returns its row (final and best validation, characters a second)."""
    folder = os.path.join(out, f"{name}-s{seed}-{chars / 1e6:g}M")
    bsz = overrides.get("training.batch_size", 32)
    seq = overrides.get("training.seq_length", 64)
    steps = max(1, round(chars / (bsz * seq)))
    sets = dict(overrides, **{"training.max_steps": steps, "training.max_minutes": None, "training.seed": seed,
                              "training.eval_share": None, "training.eval_max_chars": None,
                              "training.eval_every": max(steps // 12, 1), "output.dir": folder})
    argv = [sys.executable, "-m", "charrnn_cli", "train", os.path.join(ROOT, "configs", "shakespeare.yaml"),
            "--quiet", "--overwrite"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={yaml_value(v)}"]
    t = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    seconds = time.monotonic() - t
    if r.returncode != 0:
        raise SystemExit(f"{name}: charrnn train failed:\n{r.stdout}\n{r.stderr}")
    rows = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"), encoding="utf-8")]
    val = [x["val_loss"] for x in rows if x.get("val_loss") is not None]
    rates = [x["chars_per_sec"] for x in rows if x.get("chars_per_sec")]
    return {"recipe": name, "seed": seed, "chars": steps * bsz * seq, "final": val[-1], "best": min(val),
            "chars_per_sec": statistics.median(rates) if rates else None, "seconds": round(seconds, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=float, default=3e6, help="characters each run trains on (default 3e6)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--only", default="", help="comma-separated recipe names (default: all)")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "recipes"), help="where the run folders go")
    ap.add_argument("--list", action="store_true", help="list the recipes and exit")
    args = ap.parse_args()
    if args.list:
        for name, (what, sets) in RECIPES.items():
            print(f"{name:<12} {what}  {sets}")
        return
    names = [n for n in args.only.split(",") if n] or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipes: {', '.join(unknown)} (--list shows them)")
    print(f"recipes on tiny shakespeare, {args.chars / 1e6:g}M characters each, seeds {args.seeds}; validation: "
          f"the whole split; loss in nats/char", flush=True)
    print("| recipe | what | final (mean over seeds) | best | each seed's final | ch/s here |")
    print("| --- | --- | ---: | ---: | --- | ---: |", flush=True)
    for name in names:
        what, sets = RECIPES[name]
        rows = [run(name, sets, args.chars, seed, args.out) for seed in args.seeds]
        finals = [r["final"] for r in rows]
        print(f"| {name} | {what} | {statistics.mean(finals):.4f} | {min(r['best'] for r in rows):.4f} | "
              f"{', '.join(f'{f:.4f}' for f in finals)} | {statistics.median(r['chars_per_sec'] for r in rows):,.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
