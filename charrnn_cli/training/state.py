"""What a run is and how it ended: the trainer's state (saved in every checkpoint), the result of a
run, the exceptions that stop one, and the judgement of its last loss (`info` uses it too)."""

import math
import os
from dataclasses import dataclass, field

import numpy as np


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN); the message says why."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived. `path` is the checkpoint saved first (None if nothing was:
    the signal came while the data was being prepared); `advice` says which files to use next."""

    def __init__(self, signum, path=None, step=None, advice=""):
        super().__init__(signum, path, step)
        self.signum, self.path, self.step, self.advice = signum, path, step, advice


@dataclass
class TrainState:
    step: int = 0  # updates taken
    epoch: int = 0  # completed passes over the training split
    offset: int = 0  # characters into every stream of the current epoch
    chars_seen: int = 0
    elapsed_s: float = 0.0
    best_val: float = math.nan
    lr_anchor: tuple = (0.0, 0.0)  # the cosine schedule's anchor (optim.cosine_fraction)
    eval_chars: int = 0  # validation characters scored each time, from the config and data (0: not yet)
    history: dict = field(default_factory=lambda: {"train": [], "val": []})

    def arrays(self):
        return {"step": self.step, "epoch": self.epoch, "offset": self.offset, "chars_seen": self.chars_seen,
                "elapsed_s": self.elapsed_s, "best_val": self.best_val,
                "lr_anchor": np.array(self.lr_anchor, dtype=np.float64), "eval_chars": self.eval_chars}

    def evaluations_since_best(self):
        """Validations after the best one (the patience count)."""
        step = self.best_step()
        return 0 if step is None else sum(1 for r in self.history["val"] if r[0] > step)

    def best_step(self):
        """The step of the best validation so far, or None."""
        best = [r for r in self.history["val"] if r[3] == self.best_val]
        return int(best[-1][0]) if best else None


@dataclass
class Result:
    progress: TrainState
    val_loss: float
    stop_reason: str
    out_dir: str
    advice: str = ""  # which checkpoint to sample from, and its step
    warning: str = ""  # a diverged run says so
    model: object = None  # the trained CharRNN
    val_per_item: float = math.nan  # lines mode: the last validation's nats per item


def _advice(folder, run):
    """Which checkpoint to use next, with its step."""
    prog = run.prog
    if os.path.exists(folder.best) and prog.best_step() is not None:
        return (f"best model: {folder.best} (step {prog.best_step():,}, validation {prog.best_val:.4f}); "
                f"latest: {folder.latest} (step {prog.step:,})")
    return f"no validation has run yet, so there is no best.npz: use {folder.latest} (step {prog.step:,})"


def divergence(loss, vocab_size, lr=None):
    """A warning when a loss is far above a uniform guess over the vocabulary (ln V), else ''."""
    uniform = math.log(vocab_size)
    if not (loss > DIVERGED * uniform):
        return ""
    advice = f"lower training.learning_rate (now {lr:g})" if lr else "lower training.learning_rate"
    return (f"warning: the run diverged: {loss:.4g} nats/char is far above a uniform guess over "
            f"{vocab_size} characters (ln {vocab_size} = {uniform:.2f}); {advice}, or clip gradients harder "
            f"(training.grad_clip), and train again")

DIVERGED = 1.2  # a loss this many times ln V: worse than knowing nothing, by far


def final_loss(history, last_val):
    """The loss divergence is judged on: the last training loss (a high validation loss with a low
    training loss is overfitting, which best.npz and patience deal with), else the last validation."""
    return history["train"][-1][3] if len(history["train"]) else last_val
