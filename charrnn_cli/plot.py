"""Training curves from run folders: loss against characters seen and against wall time.

Reads OUTPUT_DIR/metrics.jsonl of each run; matplotlib is an optional extra (charrnn[plot]).
"""

import json
import math
import os


class PlotError(ValueError):
    """A run folder without usable metrics: the message names it."""


def read_metrics(run_dir):
    """(train, val) lists of (chars_seen, elapsed_s, loss) from a run folder's metrics.jsonl."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise PlotError(f"{run_dir}: no metrics.jsonl (is it a charrnn run folder?)")
    train, val = [], []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                raise PlotError(f"{path}: line {n} is not JSON") from None
            if r.get("train_loss") is not None:
                train.append((r["chars_seen"], r["elapsed_s"], r["train_loss"]))
            if r.get("val_loss") is not None:
                val.append((r["chars_seen"], r["elapsed_s"], r["val_loss"]))
    if not train and not val:
        raise PlotError(f"{path}: no losses recorded yet")
    return train, val


def plot_runs(run_dirs, out_path, title=None):
    """Write a PNG with two panels (loss vs characters, loss vs minutes), a line per run and split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(os.path.basename(os.path.normpath(d)) or d, *read_metrics(d)) for d in run_dirs]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, train, val) in enumerate(runs):
        color = colors[i % len(colors)]
        for ax, col, scale in ((axes[0], 0, 1e6), (axes[1], 1, 60.0)):
            if train:
                ax.plot([r[col] / scale for r in train], [r[2] for r in train], color=color, alpha=0.35,
                        linewidth=1, label=f"{name} train")
            if val:
                ax.plot([r[col] / scale for r in val], [r[2] for r in val], color=color, linewidth=2,
                        marker="o", markersize=3, label=f"{name} validation")
    axes[0].set_xlabel("characters seen (millions)")
    axes[1].set_xlabel("wall time (minutes)")
    axes[0].set_ylabel("loss (nats/char)")
    right = axes[1].secondary_yaxis("right", functions=(lambda x: x / math.log(2), lambda b: b * math.log(2)))
    right.set_ylabel("bits/char")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "charrnn training curves")
    fig.tight_layout()
    tmp = out_path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path
