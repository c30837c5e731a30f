"""The training loop: when to step, validate, log, save and stop, and how a signal ends a trainer.

    train(cfg)                       the run: claim the folder, set up, loop, release
      TrainingLoop.run()             step after step until a stop condition or a signal
        Trainer.step(lr)             one update on the next chunk (trainer.py)
          CharRNN.forward/backward   the math (nn/model.py, nn/cells.py; nn/reference.py states it plainly)

The concerns live apart: trainer.py holds the model and does one step, one validation, one
checkpoint; validation.py sizes validation from the config; setup.py prepares the data and the
trainer; resume.py checks a checkpoint against the config; runfolder.py owns the output folder;
signals.py decides when a signal stops the run; parallel/dist.py is the one-process-or-many
interface (the loop reads the same for both).
"""

import math
import os
import time

from ..io.config import ConfigError, default_output_dir
from ..nn.optim import learning_rate
from ..parallel.dist import on_writer, world
from ..parallel.solo import TeamStalled
from .bar import ProgressBar
from .resume import _spent, _time_fraction
from .runfolder import OtherProcessFolder, RunFolder
from .setup import _opening_lines, _planned_steps, _setup
from .signals import ForcedStop, SignalGuard, Stop, signal_name
from .state import Interrupted, Result, TrainingError, _advice, divergence, final_loss
from .validation import ValidationPlan


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
    if cfg.output.dir is None:  # a Config built directly, not through from_dict: the default folder
        cfg.output.dir = default_output_dir(cfg.data.path)
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
            trainer, ck = _setup(cfg, resume, echo, signals, comm, minutes)
            training_loop = TrainingLoop(trainer, folder, signals, comm, quiet, echo)
            if ck is not None:
                reason = training_loop.stop_reason()
                if reason is not None and reason != "patience":
                    raise TrainingError(_spent(reason, ck, trainer.prog, cfg.training))
            on_writer(comm, folder.start, trainer.prog.step if ck is not None else None)
            on_writer(comm, folder.save_config, cfg)
            if not quiet:
                _opening_lines(trainer, folder, ck, comm, echo, training_loop.plan)
            try:
                return training_loop.run(resumed=ck is not None)
            finally:
                trainer.close()
        except Stop as e:
            if isinstance(e, ForcedStop):
                raise
            raise Interrupted(e.signum) from None  # before any checkpoint: nothing to save
        finally:
            folder.release()


class TrainingLoop:
    """When to step, validate, log, save and stop: the training loop around a Trainer."""

    def __init__(self, trainer, folder, signals, comm, quiet, echo):
        self.trainer, self.folder, self.signals, self.comm = trainer, folder, signals, comm
        trainer.stop_requested = lambda: signals.signum is not None
        self.quiet, self.echo = quiet, echo
        self.t_cfg = trainer.cfg.training
        self.has_val = len(trainer.val_data) >= 2
        self.plan = ValidationPlan(self.t_cfg, len(trainer.val_data))
        self.t0 = time.monotonic()
        self.elapsed0 = trainer.prog.elapsed_s
        self.train_s, self.steps = 0.0, 0  # this invocation's training time (validation excluded) and steps
        self.val_s = 0.0  # and its validation time
        hist = trainer.prog.history["val"]
        self.last_val = hist[-1][3] if hist else math.nan

    def clock(self):
        """The writer's clock is every process's: the same schedule, the same stop."""
        self.trainer.prog.elapsed_s = self.comm.from_writer(self.elapsed0 + time.monotonic() - self.t0)

    def stop_reason(self):
        return self.comm.from_writer(self._stop_reason())

    def _stop_reason(self):
        t_cfg, prog = self.t_cfg, self.trainer.prog
        if t_cfg.max_steps is not None and prog.step >= t_cfg.max_steps:
            return "max_steps"
        if t_cfg.max_epochs is not None and self.trainer.epoch_float() >= t_cfg.max_epochs - 1e-12:
            return "max_epochs"
        reserve = self.plan.reserve(t_cfg) if self.has_val else 0.0  # room for the final validation
        if t_cfg.max_minutes is not None and prog.elapsed_s + reserve >= 60 * t_cfg.max_minutes:
            return "max_minutes"
        if t_cfg.patience is not None and prog.evaluations_since_best() >= t_cfg.patience:
            return "patience"
        return None

    def learning_rate_at(self, step):
        prog = self.trainer.prog
        return learning_rate(self.t_cfg, step, _time_fraction(self.t_cfg, prog.elapsed_s), prog.lr_anchor)

    def save(self, path):
        with self.signals.finishing():
            self.trainer.save(path)

    def _save_and_stop(self, signum):
        """A signal stops the run: save latest.npz, then stop."""
        self.save(self.folder.latest)
        return self._stop_saved(signum)

    def _stop_saved(self, signum):
        """The Interrupted a signal ends the run with, once latest.npz holds the run; a signal while
        the run winds up (its helper stopping) then says which checkpoint that is."""
        self.signals.saved = (self.folder.latest, self.trainer.prog.step)
        return Interrupted(signum, self.folder.latest, self.trainer.prog.step, _advice(self.folder, self.trainer))

    def _stalled_stop(self, e):
        """A signal came while the step waited for a helper that does not answer (a stopped one):
        stop the team, then save the run as the last finished step left it, as for a second
        Ctrl-C. When the update had begun, the parameters are part updated and nothing is saved."""
        self.trainer.close()
        signum = self.signals.signum
        if self.trainer.drop_step():
            self.save(self.folder.latest)
            stop = self._stop_saved(signum)
            stop.advice = f"{e}. {stop.advice}"
            return stop
        kept = (f"{self.folder.latest} (from the last save) holds the run" if os.path.exists(self.folder.latest)
                else "no checkpoint had been saved yet")
        return TrainingError(f"stopped by {signal_name(signum)}: {e}, during the update, so the step is part "
                             f"applied and not saved; {kept}")

    def _forced_stop(self, e):
        """A second signal during a step. In one process, save the run as the last finished step left
        it (the step under way is dropped): two quick Ctrl-Cs then lose nothing, and a third during
        the save still exits at once, the earlier checkpoint intact. (In a data-parallel job the save
        would need every process: the job just ends.)"""
        if self.comm.size == 1 and self.trainer.drop_step():
            self.save(self.folder.latest)
            e.path, e.step, e.dropped = self.folder.latest, self.trainer.prog.step, True
        return e

    def validate(self):
        trainer, plan = self.trainer, self.plan
        t = time.monotonic()
        try:
            with self.signals.interruptible():
                plan.decide(trainer)
                loss = trainer.validation_loss()
        except Stop as e:
            if isinstance(e, ForcedStop):
                raise
            raise self._save_and_stop(e.signum) from None
        plan.seconds = time.monotonic() - t
        self.val_s += plan.seconds
        self.clock()
        with self.signals.finishing():
            trainer.record_validation(loss, self.folder.best)  # may save best.npz
        self.last_val = loss
        return loss

    def log(self, record):
        on_writer(self.comm, self.folder.log, record)

    def run(self, resumed=False):
        trainer, prog, t_cfg, comm, folder = self.trainer, self.trainer.prog, self.t_cfg, self.comm, self.folder
        view = ProgressBar(_planned_steps(t_cfg, trainer.streams), prog.step, self.quiet, self.echo)
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
                    loss, chars = trainer.step(self.learning_rate_at(prog.step + 1))
                except ForcedStop as e:
                    raise self._forced_stop(e) from None
                except TeamStalled as e:
                    raise self._stalled_stop(e) from None
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
                    raise self._save_and_stop(signum)

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
                    self.log(_record(trainer, train_loss, self.last_val if evaluated else None, cps, trainer.lr,
                                     self.plan.seconds if evaluated else None, self.val_s))
                    last = "-" if math.isnan(self.last_val) else f"{self.last_val:.3f}"
                    view.report(prog.step, f"ep {trainer.epoch_float():.2f} loss {train_loss:.3f} val {last} "
                                           f"{cps:,.0f} ch/s" + _eta(t_cfg, prog, self.val_s), evaluated)
                    window_loss, window_n, window_chars, window_t = 0.0, 0, 0, now
                if prog.step % t_cfg.checkpoint_every == 0:
                    self.save(folder.latest)
                    last_saved_step = prog.step
                    signum = comm.max(self.signals.signum or 0)  # a signal during the save: it was the stop's
                    if signum:
                        raise self._stop_saved(signum)
            # the end: a last validation and checkpoint
            if self.has_val and (not prog.history["val"] or prog.history["val"][-1][0] != prog.step):
                self.validate()
                self.log(_record(trainer, None, self.last_val, None, None, self.plan.seconds, self.val_s))
            if last_saved_step != prog.step or not comm.from_writer(os.path.exists(folder.latest)):
                self.save(folder.latest)
        finally:
            view.close()
        warning = divergence(final_loss(prog.history, self.last_val), len(trainer.corpus.vocab), t_cfg.learning_rate)
        return Result(prog, self.last_val, reason, trainer.cfg.output.dir, _advice(folder, trainer), warning, trainer.model,
                      trainer.val_per_item)


def _record(trainer, train_loss, val_loss, cps, lr, val_s=None, val_total_s=None):
    prog = trainer.prog
    return {"step": prog.step, "epoch": round(trainer.epoch_float(), 4), "chars_seen": prog.chars_seen,
            "train_loss": train_loss, "val_loss": val_loss, "learning_rate": lr,
            "chars_per_sec": None if cps is None else round(cps, 1), "elapsed_s": round(prog.elapsed_s, 3),
            "val_s": None if val_s is None else round(val_s, 3),
            **({"val_nats_per_item": trainer.val_per_item if val_loss is not None else None}
               if trainer.nl is not None else {}),
            "val_total_s": None if val_total_s is None else round(val_total_s, 3)}


def _eta(t_cfg, prog, val_seconds):
    spent = f" val {val_seconds:.0f}s" if val_seconds else ""
    if t_cfg.max_minutes is None:
        return spent
    left = max(0.0, 60 * t_cfg.max_minutes - prog.elapsed_s)
    return f"{spent} {int(left // 60)}:{int(left % 60):02d} left"
