"""The training loop: streams, truncated BPTT with carried state, validation, checkpoints.

State policy (the one place it is decided): the hidden state starts at zero, is carried from
each chunk to the next, and is reset to zero when the streams wrap at an epoch boundary.
Validation and sampling always start from a zero state of their own.

The concerns live apart: `Run` holds the model and optimizer and does one step, one validation
pass, one checkpoint; `Schedule` is the loop around it (when to validate, log, save and stop);
`ValidationPlan` sizes validation to its share of the run; runfolder.py owns the output folder
(its lock, what a new run may replace, the metrics log); signals.py decides when a signal stops
the run; dist.py is the one-process-or-many interface (the loop reads the same for both).

Exact resume: a checkpoint holds parameters, optimizer state, step, epoch, stream offset,
the carried state and the dropout generator's state, so N steps + resume + M steps gives
the same parameters, bit for bit, as N + M steps straight.
"""

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..io import checkpoint as ckpt
from ..io.data import DataError, Streams, prepare
from ..parallel.dist import Single, world
from .evaluate import score_sums
from ..nn.model import CharRNN
from ..io.config import ConfigError
from ..parallel.cores import blas_pin_note, team_size
from .progress import ProgressView
from ..nn.optim import clip_and_step, cosine_fraction, global_norm, learning_rate, make_optimizer
from .runfolder import OtherProcessFolder, RunFolder
from .signals import ForcedStop, SignalGuard, Stop, signal_name
from ..parallel.team import SOLO, TeamError, TeamStalled, make_team


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN); the message says why."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived. `path` is the checkpoint saved first (None if nothing was:
    the signal came while the data was being prepared); `advice` says which files to use next."""

    def __init__(self, signum, path=None, step=None, advice=""):
        super().__init__(signum, path, step)
        self.signum, self.path, self.step, self.advice = signum, path, step, advice


@dataclass
class Progress:
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
    progress: Progress
    val_loss: float
    stop_reason: str
    out_dir: str
    advice: str = ""  # which checkpoint to sample from, and its step
    warning: str = ""  # a diverged run says so
    model: object = None  # the trained CharRNN
    val_per_item: float = math.nan  # lines mode: the last validation's nats per item


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


def _check_resume(ck, cfg, vocab):
    a, b = ck.config.model, cfg.model
    for key in ("type", "hidden_size", "num_layers"):
        if getattr(a, key) != getattr(b, key):
            raise ckpt.CheckpointError(f"{ck.path} does not match the config: model.{key} is "
                                       f"{getattr(a, key)!r} in the checkpoint, {getattr(b, key)!r} in the config")
    if ck.vocab != vocab:
        raise ckpt.CheckpointError(f"{ck.path} cannot go on with {cfg.data.path}: {_vocab_change(ck.vocab, vocab)}; "
                                   f"a run's characters are fixed when it starts, so start a new run on this text, "
                                   f"without --resume and with --set output.dir=NEW_FOLDER")
    if ck.config.data.mode != cfg.data.mode:
        raise ckpt.CheckpointError(f"{ck.path} was trained with data.mode {ck.config.data.mode}; "
                                   f"resume with the same data.mode")
    if ck.config.training.batch_size != cfg.training.batch_size:
        raise ckpt.CheckpointError(f"{ck.path} was trained with training.batch_size "
                                   f"{ck.config.training.batch_size}; resume with the same batch_size")


def _vocab_change(old, new, limit=8):
    """The characters a text gained and lost against a run's vocabulary, as a phrase.

    >>> from charrnn_cli.io.vocab import Vocab
    >>> _vocab_change(Vocab.from_text("abc"), Vocab.from_text("abd~"))
    "the text has 2 characters the run never saw ('d', '~') and lacks 1 it had ('c')"
    """
    def listed(chars):
        shown = ", ".join(repr(c) for c in chars[:limit])
        return f"({shown}{', ...' if len(chars) > limit else ''})"

    gained = [c for c in new.chars if c not in old]
    lost = [c for c in old.chars if c not in new]
    parts = ([f"has {len(gained)} character{'s' * (len(gained) != 1)} the run never saw {listed(gained)}"]
             if gained else []) + ([f"lacks {len(lost)} it had {listed(lost)}"] if lost else [])
    return "the text " + " and ".join(parts)


def _data_changes(ck, cfg, corpus):
    """What differs between the data a checkpoint was trained on and the data now, as phrases."""
    changes = []
    old = ck.config.data
    length, sha1 = ck.scalar("data.length"), ck.get("data.sha1")
    same_text = length == len(corpus.data) and sha1 is not None and str(sha1) == corpus.sha1 != ""
    if os.path.abspath(old.path) != os.path.abspath(cfg.data.path) and not same_text:
        changes.append(f"data.path {old.path} -> {cfg.data.path}")  # the same text elsewhere is no change
    if length is not None and length != len(corpus.data):
        changes.append(f"{length:,} -> {len(corpus.data):,} characters")
    elif sha1 is not None and corpus.sha1 and str(sha1) != corpus.sha1:
        changes.append("the same length but different text")
    if old.val_fraction != cfg.data.val_fraction:
        changes.append(f"data.val_fraction {old.val_fraction} -> {cfg.data.val_fraction}")
    return changes


def _planned_steps(tcfg, streams):
    caps = []
    if tcfg.max_steps is not None:
        caps.append(tcfg.max_steps)
    if tcfg.max_epochs is not None:
        caps.append(math.ceil(tcfg.max_epochs * streams.steps_per_epoch))
    return min(caps) if caps else None


_ONE_PROCESS = "--set training.unit_split=1 trains in one process"  # the way out of every team failure


def _team_failed(e, what):
    """A TeamError as the one line the user sees."""
    return TrainingError(f"{e}; {what} ({_ONE_PROCESS})")


class Run:
    """What training holds and does: the model, optimizer, progress, carried state and dropout
    generator; one step, one validation pass, one checkpoint."""

    def __init__(self, cfg, corpus, streams, val_data, ck=None, echo=print, comm=None):
        t_cfg, m_cfg = cfg.training, cfg.model
        self.cfg, self.corpus, self.streams, self.val_data = cfg, corpus, streams, val_data
        self.comm = comm or Single()
        self.block = self.comm.block(t_cfg.batch_size)  # this process's streams [first, end)
        self.nl = corpus.vocab.index("\n") if cfg.data.mode == "lines" else None  # lines: items reset the state
        self.val_per_item = math.nan  # lines mode: the last validation's nats per item
        self.local_b = self.block[1] - self.block[0]
        self.model = CharRNN(m_cfg.type, len(corpus.vocab), m_cfg.hidden_size, m_cfg.num_layers, m_cfg.dropout,
                             seed=t_cfg.seed, init=m_cfg.init, init_scale=m_cfg.init_scale,
                             forget_bias=m_cfg.forget_bias)
        self.optimizer = make_optimizer(t_cfg.optimizer, self.model.params, t_cfg)
        self.prog = Progress()
        self.rng = np.random.default_rng(t_cfg.seed + 1)  # dropout masks
        self.state = self.model.zero_state(self.local_b)
        self.team = SOLO  # the processes sharing each step (team.py), started with the first step
        self._before_step = None  # the dropout generator's state while a step can still be dropped (drop_step)
        self.team_size = team_size(t_cfg, m_cfg) if self.comm.size == 1 else 1
        self.stop_requested = lambda: False  # whether a signal asked the run to stop (the loop sets it)
        self.echo = echo
        if ck is not None:
            self._resume_from(ck, echo)

    def _resume_from(self, ck, echo):
        self.model.load_state_dict(ck.arrays)
        try:
            self.optimizer.load_state_arrays(ck.arrays)
        except KeyError:  # another optimizer: its state means something else, so start this one fresh
            echo(f"warning: {ck.path} was trained with {ck.config.training.optimizer}; "
                 f"{self.cfg.training.optimizer} starts with fresh state (the resume is not exact)")
        except ValueError as e:
            raise ckpt.CheckpointError(f"{ck.path}: {e}") from None
        self.prog = Progress(
            step=ck.scalar("train.step", 0), epoch=ck.scalar("train.epoch", 0), offset=ck.scalar("train.offset", 0),
            chars_seen=ck.scalar("train.chars_seen", 0), elapsed_s=ck.scalar("train.elapsed_s", 0.0),
            best_val=ck.scalar("train.best_val", math.nan), eval_chars=ck.scalar("train.eval_chars", 0),
            lr_anchor=tuple(ck.get("train.lr_anchor", np.zeros(2)).tolist()),
            history={"train": ck.history("train").tolist(), "val": ck.history("val").tolist()})
        if self.prog.offset >= self.streams.stream_len:
            self.prog.offset, self.prog.epoch = 0, self.prog.epoch + 1
        carried = ck.state(self.model)  # (L, B, H): this process carries its block of streams
        if carried is not None and self.prog.offset > 0:
            first, end = self.block
            self.state = tuple(np.ascontiguousarray(s[:, first:end]) for s in carried)
        self.rng = ck.rng()

    def epoch_float(self):
        return self.prog.epoch + self.prog.offset / self.streams.stream_len

    def step(self, lr_of):
        """One update on the next chunk; returns (loss, characters). lr_of(step) gives the rate."""
        prog, model, comm, B = self.prog, self.model, self.comm, self.cfg.training.batch_size
        if prog.offset == 0:
            self.state = model.zero_state(self.local_b)  # epoch boundary: the streams wrap
        self._before_step = self.rng.bit_generator.state  # until the update, all this step has changed
        x, y = self.streams.chunk(prog.offset)  # (T, b): this process's streams
        masks = model.dropout_masks(x.shape[0], B, self.rng)  # drawn for all B streams, as one process would
        if masks is not None and self.local_b != B:
            first, end = self.block
            masks = [np.ascontiguousarray(m[:, :, first:end]) for m in masks]
        resets = None if self.nl is None else x == self.nl  # an item starts: its state starts from zero
        team = self._team()
        team.begin(x, self.state, masks, resets, targets=y)  # the team's other processes start the same step
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run: the finite check below says so
            try:
                loss, new_state, cache = model.forward(x, y, self.state, masks, resets, team=team)
                grads, _ = model.backward(cache, team=team)
            except TeamStalled:
                raise  # a signal, and a helper that does not answer: the loop drops the step and saves
            except TeamError as e:
                raise _team_failed(e, "the step was not applied") from None
        grads = comm.average_gradients(grads)  # gradients of the mean loss over all B x T characters
        loss = comm.mean(loss)
        norm = global_norm(grads)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            bad = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
            raise TrainingError(f"the {bad[0]} became {bad[1]} at step {prog.step + 1}; stopped without saving "
                                f"(try a lower training.learning_rate or grad_clip)")
        self.lr = lr_of(prog.step + 1)
        self._before_step = None  # the update changes the parameters in place: no way back from here
        try:
            team.update(self._update, grads, self.lr, norm, self.optimizer.t + 1)  # every process its block
        except TeamStalled:
            raise  # the parameters part updated: drop_step says so, and nothing is saved
        except TeamError as e:  # parameters part updated: the last checkpoint is the run's state
            raise _team_failed(e, "the step was only partly applied, and it is not saved") from None
        self.state = new_state
        prog.step += 1
        prog.offset += x.shape[0]
        prog.chars_seen += x.size * comm.size
        if prog.offset >= self.streams.stream_len:
            prog.offset, prog.epoch = 0, prog.epoch + 1
            self.state = model.zero_state(self.local_b)
        return loss, x.size * comm.size

    def drop_step(self):
        """After a step stopped before its update (a second Ctrl-C): put back the one thing it had
        changed, the dropout generator, so the run is as the last finished step left it, ready to
        save. False once the update has begun."""
        if self._before_step is None:
            return False
        self.rng.bit_generator.state, self._before_step = self._before_step, None
        return True

    def _update(self, grads, args, share):
        """The update (lr, norm, t = args) on block share(n) of every parameter (all of it for None):
        each process of the team runs this on its own block (team.update)."""
        t_cfg = self.cfg.training
        clip_and_step(self.optimizer, self.model.params, grads, t_cfg.clip_mode, t_cfg.grad_clip, *args, share)

    def _team(self):
        if self.team is SOLO and self.team_size > 1:
            try:
                self.team = make_team(self.team_size, self.model, self.local_b, self.cfg.training.seq_length,
                                      self._update, list(self.optimizer.state.values()))
            except OSError as e:  # no memory or process slot for the helper
                raise TrainingError(f"could not start the helper processes of the training step: {e} "
                                    f"({_ONE_PROCESS})") from None
            self.team.stop_requested, self.team.warn = self.stop_requested, self.echo
        return self.team

    def close(self):
        """Stop the team's other processes (a no-op in one process)."""
        self.team.close()

    def validation_loss(self, max_chars=None):
        """The validation loss over the first max_chars characters (default: the run's fixed amount)."""
        t_cfg, comm = self.cfg.training, self.comm
        try:
            total, count, ends = score_sums(self.model, self.val_data, t_cfg.batch_size, t_cfg.seq_length,
                                            max_chars or self.prog.eval_chars or t_cfg.eval_max_chars, comm.rank,
                                            comm.size, nl=self.nl, team=self._team())
        except TeamError as e:
            raise TrainingError(f"{e} (during validation; {_ONE_PROCESS})") from None
        total, count, ends = comm.sum((total, count, ends))  # each process scored its block of the streams
        self.val_per_item = total / ends if ends else math.nan
        return total / count if count else math.nan

    def record_validation(self, loss, best_path):
        """Add a validation result to the history; save best_path when it improves."""
        prog = self.prog
        prog.history["val"].append([prog.step, prog.chars_seen, prog.elapsed_s, loss])
        if not (loss >= prog.best_val) and math.isfinite(loss):  # first finite evaluation or an improvement
            prog.best_val = loss
            self.save(best_path)

    def save(self, path):
        """Write a checkpoint (the writer does; every process takes part in gathering the state)."""
        comm = self.comm
        state = comm.gather_streams(self.state)
        comm.check_identical(self.model.params)

        def write():
            arrays = ckpt.build_arrays(self.model, self.corpus.vocab, self.cfg, self.optimizer, self.prog.arrays(),
                                       state, self.rng, self.prog.history)
            arrays.update({"data.length": np.array(len(self.corpus.data), dtype=np.int64),
                           "data.sha1": np.array(self.corpus.sha1),
                           "train.layout": np.array([comm.size, self.team_size], dtype=np.int64)})
            ckpt.atomic_save_npz(path, arrays)

        on_writer(comm, write)


def train(cfg, resume=None, quiet=False, echo=print, overwrite=False, minutes=None, comm=None):
    """Train as `cfg` says, optionally continuing from the checkpoint path `resume`.

    Writes into cfg.output.dir (runfolder.py says what it may replace: `overwrite` allows
    replacing a run there). `minutes` limits this invocation to that many minutes (on resume:
    that many more). `comm` (dist.py) is this process's place in a data-parallel job; by default
    the launcher's environment decides (one process: dist.Single). Returns a Result; raises
    ConfigError / DataError / CheckpointError / RunFolderError / TrainingError / DistError for
    user-facing problems, and Interrupted when a signal arrives (after saving latest.npz, once
    training has started); signals.ForcedStop passes through a second signal.
    """
    comm = comm or world()
    t_cfg = cfg.training
    if minutes is None and t_cfg.max_steps is None and t_cfg.max_epochs is None and t_cfg.max_minutes is None:
        raise ConfigError("the config sets no stop condition: set training.max_minutes, max_steps or max_epochs "
                          "(or pass --minutes N)")
    if t_cfg.batch_size % comm.size:
        raise ConfigError(f"training.batch_size {t_cfg.batch_size} does not split over {comm.size} processes: "
                          f"use a multiple of {comm.size} (each process owns batch_size / processes streams)")
    if not comm.is_writer:
        quiet, echo = True, (lambda msg: None)
    folder = (RunFolder if comm.is_writer else OtherProcessFolder)(cfg.output.dir)
    with SignalGuard(interrupts=comm.size == 1) as signals:
        on_writer(comm, folder.claim, resume, overwrite)
        try:
            return _train(cfg, resume, quiet, echo, folder, signals, minutes, comm)
        except Stop as e:
            if isinstance(e, ForcedStop):
                raise
            raise Interrupted(e.signum) from None  # before any checkpoint: nothing to save
        finally:
            folder.release()


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


def _spent(reason, ck, prog, t_cfg):
    """The line for a resume that has nothing left to do."""
    if reason == "max_steps":
        what = f"training.max_steps {t_cfg.max_steps:,}"
        how = f"raise it with --set training.max_steps=N (N > {prog.step})"
    elif reason == "max_epochs":
        what = f"training.max_epochs {t_cfg.max_epochs:g}"
        how = "raise it with --set training.max_epochs=N"
    else:
        what = f"training.max_minutes {t_cfg.max_minutes:g} ({prog.elapsed_s / 60:.1f} minutes trained)"
        how = "train on with --minutes N (N more minutes)"
    return (f"nothing to do: {ck.path} (step {prog.step:,}) has already reached {what}; the budget counts "
            f"the whole run, across resumes: {how}")


def _time_fraction(t_cfg, elapsed_s):
    """How much of max_minutes has gone: the cosine schedule's clock when it runs on time."""
    return elapsed_s / (60 * t_cfg.max_minutes) if t_cfg.max_minutes else 0.0


def _anchor_on_resume(ck, t_cfg, prog):
    """Keep the cosine schedule continuous when a resume changes its horizon (a longer budget)."""
    old_t = ck.config.training
    if t_cfg.lr_schedule != "cosine" or old_t.lr_schedule != "cosine":
        return prog.lr_anchor

    def frac(tc, anchor):
        return cosine_fraction(tc, prog.step, _time_fraction(tc, prog.elapsed_s), anchor)

    reached = frac(old_t, prog.lr_anchor)
    if frac(t_cfg, prog.lr_anchor) == reached:
        return prog.lr_anchor  # the same schedule: the resume stays exact
    raw = frac(t_cfg, (0.0, 0.0))
    return (reached, raw)


class ValidationPlan:
    """How much validation text to score: eval_max_chars (and at most the split), or fewer when
    scoring that much would take more than eval_share of the run's time. Decided from the config
    and the data alone, never from a clock, so one config on one text scores the same characters
    on any machine and under any load, and its losses (and best.npz) compare across runs.

    A validation scores forward only, which costs about 1/FORWARD_RATIO of a training step per
    character (2.4-2.7 for LSTM, GRU and RNN, measured on 2 cores). So between two validations
    eval_every steps train eval_every x batch_size x seq_length characters, and validation keeps
    within eval_share by scoring at most share / (1 - share) x FORWARD_RATIO times that.
    >>> from charrnn_cli.io.config import from_dict
    >>> ValidationPlan(from_dict({"training": {"eval_every": 10, "batch_size": 4, "seq_length": 10}}).training,
    ...                10 ** 6).chars
    111
    """

    FORWARD_RATIO = 2.5

    def __init__(self, t_cfg, n_val):
        self.t_cfg = t_cfg
        self.cap = max(1, min(n_val - 1, t_cfg.eval_max_chars or n_val))
        share = t_cfg.eval_share
        trained = t_cfg.eval_every * t_cfg.batch_size * t_cfg.seq_length
        allowed = self.cap if share is None else int(share / (1 - share) * self.FORWARD_RATIO * trained)
        self.chars = max(1, min(self.cap, allowed))
        self.seconds = None  # how long the last validation took

    def decide(self, run):
        """Fix run.prog.eval_chars (a resumed run keeps the number it had)."""
        if not run.prog.eval_chars:
            run.prog.eval_chars = self.chars

    def describe(self, n_val, eval_chars=0):
        """The opening line on how much each validation scores (`eval_chars`: a resumed run's)."""
        n = eval_chars or self.chars
        if n >= n_val - 1:
            return f"validation: all {n_val - 1:,} predicted characters of the split, each time"
        return (f"validation: the first {n:,} of the split's {n_val - 1:,} predicted characters, each time "
                f"(training.eval_max_chars, and eval_share of the time between validations)")

    def reserve(self, t_cfg):
        """Seconds to keep for the final validation inside max_minutes."""
        if self.seconds is not None:
            return self.seconds
        return (t_cfg.eval_share or 0.0) * 60 * (t_cfg.max_minutes or 0.0)


def _prepare(cfg, echo, signals, comm, expect=None):
    """The encoded corpus. In a data-parallel job the writer prepares it first; the others then
    reuse its cache (or, with a node-local data.cache_dir, encode their own, one process per node
    at a time), and a problem any of them meets stops them all with its message."""
    cache_dir = cfg.data.cache_dir or os.path.join(cfg.output.dir, "data_cache")

    def prep():
        with signals.interruptible():
            return prepare(cfg.data.path, cache_dir, echo, mode=cfg.data.mode, expect=expect,
                           min_count=cfg.data.min_count)

    if comm.size == 1:
        return prep()
    corpus = None

    def writer_first():
        nonlocal corpus
        corpus = prep()

    on_writer(comm, writer_first)  # its errors (and a signal while it encodes) reach every process
    problem = ""
    if not comm.is_writer:
        try:
            corpus = prep()
        except (DataError, OSError) as e:
            problem = f"process {comm.rank}: {e}"
    problem = comm.max(problem)
    if problem:
        raise DataError(problem)
    return corpus


def training_bytes(cfg, V):
    """About how many bytes training `cfg` on V characters holds: the parameters, their gradients,
    the optimizer's state and scratch (float32), the activations a chunk keeps for the backward
    pass, and the logits. training_bytes(from_dict({}), 65) // 2**20 == 230"""
    m, t = cfg.model, cfg.training
    G, H, L = {"rnn": 1, "lstm": 4, "gru": 3}[m.type], m.hidden_size, m.num_layers
    params = G * H * (V + H + 2) + (L - 1) * G * H * (2 * H + 2) + V * (H + 1)
    copies = 3 + {"adam": 2, "rmsprop": 1, "adagrad": 1, "sgd": 1}[t.optimizer]  # + gradient, scratch, team
    activations = L * (t.seq_length + 1) * t.batch_size * (G + 4) * H * 2
    logits = 3 * t.seq_length * t.batch_size * V
    return 4 * (copies * params + activations + logits)


def _check_memory(cfg, V, available=None):
    """Refuse, before allocating anything, a model whose training does not fit in memory."""
    from ..parallel.cores import available_memory

    need = training_bytes(cfg, V)
    have = available_memory() if available is None else available
    if have is not None and need > have:
        m, t = cfg.model, cfg.training
        raise ConfigError(f"model.num_layers {m.num_layers} x model.hidden_size {m.hidden_size} on {V} characters, "
                          f"batch_size {t.batch_size} x seq_length {t.seq_length}, needs about {need / 2**30:.1f} GB "
                          f"to train; this machine has {have / 2**30:.1f} GB free: choose a smaller model or batch")


def _note_layout(ck, run, echo):
    """A resume into another number of processes (data-parallel or sharing each step) goes on with
    the same math, but the products are cut into other blocks and round differently (about 1e-7
    a step), so it is close to, not bit for bit, what the first layout would have given: say so."""
    layout = ck.get("train.layout")
    if layout is None:
        return
    was, now = tuple(int(v) for v in layout), (run.comm.size, run.team_size)
    if was != now:
        def words(n, s):
            return f"{n} data-parallel process{'es' * (n > 1)} x {s} sharing each step"
        echo(f"note: {ck.path} was trained with {words(*was)}, this run uses {words(*now)}: the same math, "
             f"rounded differently, so the resume is close to but not bit for bit what the first layout gives")


def _too_few_items(cfg, corpus):
    """Lines mode with no whole item left for training: say what is wrong with the list."""
    items = max(int((np.asarray(corpus.data) == corpus.vocab.index("\n")).sum()) - 1, 0)
    return (f"{cfg.data.path}: the list has {items:,} item{'s' * (items != 1)} (one per non-empty line); "
            f"validation takes whole items from its end (data.val_fraction {cfg.data.val_fraction:g}), which leaves "
            f"none to train on: give more items, one per line, or --set data.val_fraction=0 to train on all of them")


def _fit_hint(n, T):
    """What to --set so that n training characters fill at least one batch: the error's way out.

    >>> _fit_hint(2000, 64), _fit_hint(40, 64), _fit_hint(1, 64)
    ('; --set training.batch_size=30 fits', '; --set training.batch_size=1 --set training.seq_length=39 fits', '')
    """
    if n >= T + 1:
        return f"; --set training.batch_size={n // (T + 1)} fits"
    if n >= 2:
        return f"; --set training.batch_size=1 --set training.seq_length={n - 1} fits"
    return ""


def _setup(cfg, resume, echo, signals, comm, minutes):
    """The data, this process's streams, the checkpoint resumed from and the Run: (run, ck)."""
    t_cfg = cfg.training
    ck = None if resume is None else on_writer(comm, ckpt.load, resume)  # read once, sent to every process
    expect = None if ck is None else (lambda vocab: _check_resume(ck, cfg, vocab))  # before a cache is written
    corpus = _prepare(cfg, echo, signals, comm, expect)
    lines = cfg.data.mode == "lines"
    train_data, val_data = corpus.split(cfg.data.val_fraction, lines=lines)  # lines: whole items
    B, T = t_cfg.batch_size, t_cfg.seq_length
    need = B * (T + 1)
    if lines and len(train_data) < 2:
        raise DataError(_too_few_items(cfg, corpus))
    if len(train_data) < need:
        n = len(train_data)
        raise DataError(f"{cfg.data.path}: the training split has {n:,} character{'s' * (n != 1)}; "
                        f"batch_size {B} x (seq_length {T} + 1) needs at least {need:,}{_fit_hint(n, T)}")
    streams = Streams(train_data, B, T, block=comm.block(B),  # this process's streams
                      align=corpus.item_start_at_or_before if lines else None)
    if ck is not None:
        _check_resume(ck, cfg, corpus.vocab)
        changes = _data_changes(ck, cfg, corpus)
        if changes:
            echo(f"warning: the data changed since {ck.path} was saved ({'; '.join(changes)}); "
                 f"training goes on from there, but the resume is not exact")
    _check_memory(cfg, len(corpus.vocab))
    run = Run(cfg, corpus, streams, val_data, ck, echo, comm)
    if ck is not None:
        _note_layout(ck, run, echo)
    if minutes is not None:
        t_cfg.max_minutes = run.prog.elapsed_s / 60 + minutes
    if ck is not None:
        run.prog.lr_anchor = _anchor_on_resume(ck, t_cfg, run.prog)
    return run, ck


def _opening_lines(run, folder, ck, comm, echo, plan):
    cfg, corpus, streams, prog = run.cfg, run.corpus, run.streams, run.prog
    B, T = cfg.training.batch_size, cfg.training.seq_length
    n_val = len(run.val_data)
    echo(f"data: {len(corpus.data):,} characters, vocabulary {len(corpus.vocab)} "
         f"({'cache reused' if corpus.reused else 'encoded'}); train {len(corpus.data) - n_val:,}, "
         f"validation {n_val:,}")
    if corpus.folded is not None and corpus.folded.distinct:
        echo("data: " + corpus.folded.describe(len(corpus.data)))
    if n_val >= 2:
        echo(plan.describe(n_val, prog.eval_chars))
    echo(f"model: {cfg.model.type} {cfg.model.num_layers}x{cfg.model.hidden_size}, "
         f"{run.model.num_params():,} parameters; {streams.steps_per_epoch:,} steps per epoch of {B} x {T}")
    echo(f"config: {folder.config} (copy it and edit to change more: charrnn train COPY.yaml)")
    if comm.size > 1:
        echo(f"processes: {comm.size} on {comm.hosts} host{'s' if comm.hosts > 1 else ''}, "
             f"{B // comm.size} streams each (training.batch_size {B} in all)")
    note = blas_pin_note()
    if note:
        echo(note)
    if run.team_size > 1:
        H = cfg.model.hidden_size
        echo(f"cores: {run.team_size} processes share each step, {H // run.team_size} of the {H} hidden units each "
             f"(training.unit_split; 1 trains in one process)")
    if ck is not None:
        echo(f"resumed from {ck.path} at step {prog.step:,}; writing to {folder.path}")


def _train(cfg, resume, quiet, echo, folder, signals, minutes, comm):
    run, ck = _setup(cfg, resume, echo, signals, comm, minutes)
    schedule = Schedule(run, folder, signals, comm, quiet, echo)
    if ck is not None:
        reason = schedule.stop_reason()
        if reason is not None and reason != "patience":
            raise TrainingError(_spent(reason, ck, run.prog, cfg.training))
    on_writer(comm, folder.start, run.prog.step if ck is not None else None)
    on_writer(comm, folder.save_config, cfg)
    if not quiet:
        _opening_lines(run, folder, ck, comm, echo, schedule.plan)
    try:
        return schedule.loop(resumed=ck is not None)
    finally:
        run.close()


class Schedule:
    """When to step, validate, log, save and stop: the training loop around a Run."""

    def __init__(self, run, folder, signals, comm, quiet, echo):
        self.run, self.folder, self.signals, self.comm = run, folder, signals, comm
        run.stop_requested = lambda: signals.signum is not None
        self.quiet, self.echo = quiet, echo
        self.t_cfg = run.cfg.training
        self.has_val = len(run.val_data) >= 2
        self.plan = ValidationPlan(self.t_cfg, len(run.val_data))
        self.t0 = time.monotonic()
        self.elapsed0 = run.prog.elapsed_s
        self.train_s, self.steps = 0.0, 0  # this invocation's training time (validation excluded) and steps
        self.val_s = 0.0  # and its validation time
        hist = run.prog.history["val"]
        self.last_val = hist[-1][3] if hist else math.nan

    def clock(self):
        """The writer's clock is every process's: the same schedule, the same stop."""
        self.run.prog.elapsed_s = self.comm.from_writer(self.elapsed0 + time.monotonic() - self.t0)

    def stop_reason(self):
        return self.comm.from_writer(self._stop_reason())

    def _stop_reason(self):
        t_cfg, prog = self.t_cfg, self.run.prog
        if t_cfg.max_steps is not None and prog.step >= t_cfg.max_steps:
            return "max_steps"
        if t_cfg.max_epochs is not None and self.run.epoch_float() >= t_cfg.max_epochs - 1e-12:
            return "max_epochs"
        reserve = self.plan.reserve(t_cfg) if self.has_val else 0.0  # room for the final validation
        if t_cfg.max_minutes is not None and prog.elapsed_s + reserve >= 60 * t_cfg.max_minutes:
            return "max_minutes"
        if t_cfg.patience is not None and prog.evaluations_since_best() >= t_cfg.patience:
            return "patience"
        return None

    def lr_of(self, step):
        prog = self.run.prog
        return learning_rate(self.t_cfg, step, _time_fraction(self.t_cfg, prog.elapsed_s), prog.lr_anchor)

    def save(self, path):
        with self.signals.finishing():
            self.run.save(path)

    def interrupted(self, signum):
        """A signal stops the run: save latest.npz, then stop."""
        self.save(self.folder.latest)
        return self.stopped(signum)

    def stopped(self, signum):
        """The Interrupted a signal ends the run with, once latest.npz holds the run; a signal while
        the run winds up (its helper stopping) then says which checkpoint that is."""
        self.signals.saved = (self.folder.latest, self.run.prog.step)
        return Interrupted(signum, self.folder.latest, self.run.prog.step, _advice(self.folder, self.run))

    def stalled(self, e):
        """A signal came while the step waited for a helper that does not answer (a stopped one):
        stop the team, then save the run as the last finished step left it, as for a second
        Ctrl-C. When the update had begun, the parameters are part updated and nothing is saved."""
        self.run.close()
        signum = self.signals.signum
        if self.run.drop_step():
            self.save(self.folder.latest)
            stop = self.stopped(signum)
            stop.advice = f"{e}. {stop.advice}"
            return stop
        kept = (f"{self.folder.latest} (from the last save) holds the run" if os.path.exists(self.folder.latest)
                else "no checkpoint had been saved yet")
        return TrainingError(f"stopped by {signal_name(signum)}: {e}, during the update, so the step is part "
                             f"applied and not saved; {kept}")

    def forced(self, e):
        """A second signal during a step. In one process, save the run as the last finished step left
        it (the step under way is dropped): two quick Ctrl-Cs then lose nothing, and a third during
        the save still exits at once, the earlier checkpoint intact. (In a data-parallel job the save
        would need every process: the job just ends.)"""
        if self.comm.size == 1 and self.run.drop_step():
            self.save(self.folder.latest)
            e.path, e.step, e.dropped = self.folder.latest, self.run.prog.step, True
        return e

    def validate(self):
        run, prog, comm, plan = self.run, self.run.prog, self.comm, self.plan
        t = time.monotonic()
        try:
            with self.signals.interruptible():
                plan.decide(run)
                loss = run.validation_loss()
        except Stop as e:
            if isinstance(e, ForcedStop):
                raise
            raise self.interrupted(e.signum) from None
        plan.seconds = time.monotonic() - t
        self.val_s += plan.seconds
        self.clock()
        with self.signals.finishing():
            run.record_validation(loss, self.folder.best)  # may save best.npz
        self.last_val = loss
        return loss

    def log(self, record):
        on_writer(self.comm, self.folder.log, record)

    def loop(self, resumed=False):
        run, prog, t_cfg, comm, folder = self.run, self.run.prog, self.t_cfg, self.comm, self.folder
        view = ProgressView(_planned_steps(t_cfg, run.streams), prog.step, self.quiet, self.echo)
        window_loss, window_n, window_chars, window_t = 0.0, 0, 0, self.t0
        last_saved_step = prog.step if resumed else -1
        reason = None
        try:
            while True:
                self.clock()
                reason = self.stop_reason()
                if reason:
                    break
                t_step = time.monotonic()
                try:
                    loss, chars = run.step(self.lr_of)
                except ForcedStop as e:
                    raise self.forced(e) from None
                except TeamStalled as e:
                    raise self.stalled(e) from None
                except TrainingError as e:
                    last = folder.latest if os.path.exists(folder.latest) else "none yet"
                    raise TrainingError(f"{e}. Last good checkpoint: {last}") from None
                self.train_s += time.monotonic() - t_step
                self.steps += 1
                window_loss += loss
                window_n += 1
                window_chars += chars
                self.clock()
                view.step()
                signum = comm.max(self.signals.signum or 0)  # a signal to any process stops all at this step
                if signum:
                    raise self.interrupted(signum)

                evaluated = self.has_val and prog.step % t_cfg.eval_every == 0
                if evaluated:
                    t_eval = time.monotonic()
                    self.validate()
                    window_t += time.monotonic() - t_eval  # chars/s counts training time only
                if prog.step % t_cfg.log_every == 0 or evaluated:
                    now = time.monotonic()
                    cps = window_chars / max(now - window_t, 1e-9)
                    train_loss = window_loss / window_n
                    prog.history["train"].append([prog.step, prog.chars_seen, prog.elapsed_s, train_loss])
                    self.log(_record(run, train_loss, self.last_val if evaluated else None, cps, run.lr,
                                     self.plan.seconds if evaluated else None, self.val_s))
                    last = "-" if math.isnan(self.last_val) else f"{self.last_val:.3f}"
                    view.report(prog.step, f"ep {run.epoch_float():.2f} loss {train_loss:.3f} val {last} "
                                           f"{cps:,.0f} ch/s" + _eta(t_cfg, prog, self.val_s), evaluated)
                    window_loss, window_n, window_chars, window_t = 0.0, 0, 0, now
                if prog.step % t_cfg.checkpoint_every == 0:
                    self.save(folder.latest)
                    last_saved_step = prog.step
                    signum = comm.max(self.signals.signum or 0)  # a signal during the save: it was the stop's
                    if signum:
                        raise self.stopped(signum)
            # the end: a last validation and checkpoint
            if self.has_val and (not prog.history["val"] or prog.history["val"][-1][0] != prog.step):
                self.validate()
                self.log(_record(run, None, self.last_val, None, None, self.plan.seconds, self.val_s))
            if last_saved_step != prog.step or not comm.from_writer(os.path.exists(folder.latest)):
                self.save(folder.latest)
        finally:
            view.close()
        warning = divergence(final_loss(prog.history, self.last_val), len(run.corpus.vocab), t_cfg.learning_rate)
        return Result(prog, self.last_val, reason, run.cfg.output.dir, _advice(folder, run), warning, run.model,
                      run.val_per_item)


def _record(run, train_loss, val_loss, cps, lr, val_s=None, val_total_s=None):
    prog = run.prog
    return {"step": prog.step, "epoch": round(run.epoch_float(), 4), "chars_seen": prog.chars_seen,
            "train_loss": train_loss, "val_loss": val_loss, "learning_rate": lr,
            "chars_per_sec": None if cps is None else round(cps, 1), "elapsed_s": round(prog.elapsed_s, 3),
            "val_s": None if val_s is None else round(val_s, 3),
            **({"val_nats_per_item": run.val_per_item if val_loss is not None else None}
               if run.nl is not None else {}),
            "val_total_s": None if val_total_s is None else round(val_total_s, 3)}


def _eta(t_cfg, prog, val_seconds):
    spent = f" val {val_seconds:.0f}s" if val_seconds else ""
    if t_cfg.max_minutes is None:
        return spent
    left = max(0.0, 60 * t_cfg.max_minutes - prog.elapsed_s)
    return f"{spent} {int(left // 60)}:{int(left % 60):02d} left"
