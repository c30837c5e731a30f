"""Training curves from run folders: loss against characters seen and against wall time.

Reads OUTPUT_DIR/metrics.jsonl of each run; matplotlib is an optional extra (charrnn[plot]).
"""

import math
import os

from ..training import runfolder
from ..io.files import atomic_write


class PlotError(ValueError):
    """A run folder without usable metrics: the message names it."""


def read_metrics(run_dir, warn=None):
    """(train, val) lists of (chars_seen, elapsed_s, loss) from a run folder's metrics.jsonl."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise PlotError(f"{run_dir}: no metrics.jsonl (is it a charrnn run folder?)")
    try:
        records = runfolder.read_metrics(path, warn)  # a torn last line is skipped with a warning
    except ValueError as e:
        raise PlotError(str(e)) from None
    train, val = [], []
    for r in records:
        if r.get("train_loss") is not None:
            train.append((r["chars_seen"], r["elapsed_s"], r["train_loss"]))
        if r.get("val_loss") is not None:
            val.append((r["chars_seen"], r["elapsed_s"], r["val_loss"]))
    if not train and not val:
        raise PlotError(f"{path}: no losses recorded yet")
    return train, val


def plot_runs(run_dirs, out_path, title=None, warn=None):
    """Write a PNG with two panels (loss vs characters, loss vs minutes), a line per run and split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(os.path.basename(os.path.normpath(d)) or d, *read_metrics(d, warn)) for d in run_dirs]
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
    try:
        atomic_write(out_path, lambda fh: fig.savefig(fh, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return out_path
