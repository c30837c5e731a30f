"""The training loop: streams, truncated BPTT with carried state, validation, checkpoints.

State policy (the one place it is decided): the hidden state starts at zero, is carried from
each chunk to the next, and is reset to zero when the streams wrap at an epoch boundary.
Validation and sampling always start from a zero state of their own.

Exact resume: a checkpoint holds parameters, optimizer state, step, epoch, stream offset,
the carried state and the dropout generator's state, so N steps + resume + M steps gives
the same parameters, bit for bit, as N + M steps straight.
"""

import json
import math
import os
import signal
import time
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint as ckpt
from .data import DataError, Streams, prepare
from .evaluate import score
from .model import CharRNN
from .optim import clip_gradients, global_norm, learning_rate, make_optimizer


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN); the message says why."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; latest.npz was saved first."""

    def __init__(self, signum, path):
        super().__init__(signum, path)
        self.signum, self.path = signum, path


@dataclass
class Progress:
    step: int = 0  # updates taken
    epoch: int = 0  # completed passes over the training split
    offset: int = 0  # characters into every stream of the current epoch
    chars_seen: int = 0
    elapsed_s: float = 0.0
    best_val: float = math.nan
    history: dict = field(default_factory=lambda: {"train": [], "val": []})

    def arrays(self):
        return {"step": self.step, "epoch": self.epoch, "offset": self.offset, "chars_seen": self.chars_seen,
                "elapsed_s": self.elapsed_s, "best_val": self.best_val}


@dataclass
class Result:
    progress: Progress
    val_loss: float
    stop_reason: str
    out_dir: str


class _SignalCatcher:
    """Turns SIGINT / SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _check_resume(ck, cfg, vocab):
    a, b = ck.config.model, cfg.model
    for key in ("type", "hidden_size", "num_layers"):
        if getattr(a, key) != getattr(b, key):
            raise ckpt.CheckpointError(f"{ck.path} does not match the config: model.{key} is "
                                       f"{getattr(a, key)!r} in the checkpoint, {getattr(b, key)!r} in the config")
    if ck.vocab != vocab:
        raise ckpt.CheckpointError(f"{ck.path} does not match the data: its vocabulary has {len(ck.vocab)} "
                                   f"characters, {cfg.data.path} has {len(vocab)} (or different ones)")
    if ck.config.training.batch_size != cfg.training.batch_size:
        raise ckpt.CheckpointError(f"{ck.path} was trained with training.batch_size "
                                   f"{ck.config.training.batch_size}; resume with the same batch_size")


def _planned_steps(tcfg, streams):
    caps = []
    if tcfg.max_steps is not None:
        caps.append(tcfg.max_steps)
    if tcfg.max_epochs is not None:
        caps.append(math.ceil(tcfg.max_epochs * streams.steps_per_epoch))
    return min(caps) if caps else None


def train(cfg, resume=None, quiet=False, echo=print):
    """Train as `cfg` says, optionally continuing from the checkpoint path `resume`.

    Returns a Result; raises DataError / CheckpointError / TrainingError for user-facing
    problems and Interrupted after saving latest.npz when a signal arrives.
    """
    from tqdm import tqdm

    t_cfg, m_cfg = cfg.training, cfg.model
    out_dir = cfg.output.dir
    cache_dir = cfg.data.cache_dir or os.path.join(out_dir, "data_cache")
    corpus = prepare(cfg.data.path, cache_dir)
    train_data, val_data = corpus.split(cfg.data.val_fraction)
    B, T = t_cfg.batch_size, t_cfg.seq_length
    need = B * (T + 1)
    if len(train_data) < need:
        raise DataError(f"{cfg.data.path}: the training split has {len(train_data):,} characters; "
                        f"batch_size {B} x (seq_length {T} + 1) needs at least {need:,}")
    streams = Streams(train_data, B, T)
    ck = None
    if resume is not None:
        ck = ckpt.load(resume)
        _check_resume(ck, cfg, corpus.vocab)

    model = CharRNN(m_cfg.type, len(corpus.vocab), m_cfg.hidden_size, m_cfg.num_layers, m_cfg.dropout,
                    seed=t_cfg.seed, init=m_cfg.init, init_scale=m_cfg.init_scale, forget_bias=m_cfg.forget_bias)
    optimizer = make_optimizer(t_cfg.optimizer, model.params, t_cfg)
    prog = Progress()
    rng = np.random.default_rng(t_cfg.seed + 1)  # dropout masks
    state = model.zero_state(B)
    if ck is not None:
        model.load_state_dict(ck.arrays)
        try:
            optimizer.load_state_arrays(ck.arrays)
        except KeyError:  # another optimizer: its state means something else, so start this one fresh
            echo(f"warning: {ck.path} was trained with {ck.config.training.optimizer}; "
                 f"{t_cfg.optimizer} starts with fresh state (the resume is not exact)")
        except ValueError as e:
            raise ckpt.CheckpointError(f"{ck.path}: {e}") from None
        prog = Progress(step=ck.scalar("train.step", 0), epoch=ck.scalar("train.epoch", 0),
                        offset=ck.scalar("train.offset", 0), chars_seen=ck.scalar("train.chars_seen", 0),
                        elapsed_s=ck.scalar("train.elapsed_s", 0.0), best_val=ck.scalar("train.best_val", math.nan),
                        history={"train": ck.history("train").tolist(), "val": ck.history("val").tolist()})
        if prog.offset >= streams.stream_len:
            prog.offset, prog.epoch = 0, prog.epoch + 1
        carried = ck.state(model)
        if carried is not None and prog.offset > 0:
            state = carried
        rng = ck.rng()

    os.makedirs(out_dir, exist_ok=True)
    latest, best = os.path.join(out_dir, "latest.npz"), os.path.join(out_dir, "best.npz")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    has_val = len(val_data) >= 2

    def save(path):
        arrays = ckpt.build_arrays(model, corpus.vocab, cfg, optimizer, prog.arrays(), state, rng,
                                   prog.history)
        ckpt.atomic_save_npz(path, arrays)

    def validate():
        loss, _ = score(model, val_data, streams=B, seq_length=T, max_chars=t_cfg.eval_max_chars)
        prog.history["val"].append([prog.step, prog.chars_seen, prog.elapsed_s, loss])
        if not (loss >= prog.best_val):  # first evaluation or an improvement
            prog.best_val = loss
            save(best)
        return loss

    if not quiet:
        echo(f"data: {len(corpus.data):,} characters, vocabulary {len(corpus.vocab)} "
             f"({'cache reused' if corpus.reused else 'encoded'}); train {len(train_data):,}, "
             f"validation {len(val_data):,}")
        echo(f"model: {m_cfg.type} {m_cfg.num_layers}x{m_cfg.hidden_size}, {model.num_params():,} parameters; "
             f"{streams.steps_per_epoch:,} steps per epoch of {B} x {T}")
        if ck is not None:
            echo(f"resumed from {ck.path} at step {prog.step:,}")

    planned = _planned_steps(t_cfg, streams)
    bar = tqdm(total=planned, initial=prog.step, disable=quiet, unit="step", dynamic_ncols=True, leave=True)
    t0 = time.monotonic()
    elapsed0 = prog.elapsed_s
    window_loss, window_n, window_chars, window_t = 0.0, 0, 0, t0
    last_val = prog.history["val"][-1][3] if prog.history["val"] else math.nan
    last_saved_step = prog.step if ck is not None else -1
    stop_reason = None

    def log(val_loss=None, train_loss=None, cps=None, lr=None):
        rec = {"step": prog.step, "epoch": round(prog.epoch + prog.offset / streams.stream_len, 4),
               "chars_seen": prog.chars_seen, "train_loss": train_loss, "val_loss": val_loss,
               "learning_rate": lr, "chars_per_sec": cps, "elapsed_s": round(prog.elapsed_s, 3)}
        with open(metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")

    with _SignalCatcher() as signals:
        try:
            while True:
                prog.elapsed_s = elapsed0 + time.monotonic() - t0
                if t_cfg.max_steps is not None and prog.step >= t_cfg.max_steps:
                    stop_reason = "max_steps"
                elif t_cfg.max_epochs is not None and \
                        prog.epoch + prog.offset / streams.stream_len >= t_cfg.max_epochs - 1e-12:
                    stop_reason = "max_epochs"
                elif t_cfg.max_minutes is not None and prog.elapsed_s >= 60 * t_cfg.max_minutes:
                    stop_reason = "max_minutes"
                if stop_reason:
                    break

                if prog.offset == 0:
                    state = model.zero_state(B)  # epoch boundary: the streams wrap
                x, y = streams.chunk(prog.offset)
                masks = model.dropout_masks(x.shape[0], B, rng)
                loss, new_state, cache = model.forward(x, y, state, masks)
                grads, _ = model.backward(cache)
                norm = global_norm(grads)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    raise TrainingError(
                        f"the {'loss' if not math.isfinite(loss) else 'gradient norm'} became "
                        f"{loss if not math.isfinite(loss) else norm} at step {prog.step + 1}; "
                        f"stopped without saving (try a lower training.learning_rate or grad_clip). "
                        f"Last good checkpoint: {latest if os.path.exists(latest) else 'none yet'}")
                clip_gradients(grads, t_cfg.clip_mode, t_cfg.grad_clip, norm)
                time_fraction = prog.elapsed_s / (60 * t_cfg.max_minutes) if t_cfg.max_minutes else 0.0
                lr = learning_rate(t_cfg, prog.step + 1, time_fraction)
                optimizer.step(model.params, grads, lr)
                state = new_state
                prog.step += 1
                prog.offset += x.shape[0]
                prog.chars_seen += x.size
                if prog.offset >= streams.stream_len:
                    prog.offset, prog.epoch = 0, prog.epoch + 1
                    state = model.zero_state(B)
                window_loss += loss
                window_n += 1
                window_chars += x.size
                prog.elapsed_s = elapsed0 + time.monotonic() - t0
                bar.update(1)

                evaluated = has_val and prog.step % t_cfg.eval_every == 0
                if evaluated:
                    t_eval = time.monotonic()
                    last_val = validate()
                    window_t += time.monotonic() - t_eval  # chars/s counts training time only
                if prog.step % t_cfg.log_every == 0 or evaluated:
                    now = time.monotonic()
                    cps = window_chars / max(now - window_t, 1e-9)
                    train_loss = window_loss / window_n
                    prog.history["train"].append([prog.step, prog.chars_seen, prog.elapsed_s, train_loss])
                    log(last_val if evaluated else None, train_loss, round(cps, 1), lr)
                    bar.set_postfix_str(
                        f"ep {prog.epoch + prog.offset / streams.stream_len:.2f} loss {train_loss:.3f} "
                        f"val {'-' if math.isnan(last_val) else f'{last_val:.3f}'} {cps:,.0f} ch/s"
                        + _eta(t_cfg, prog))
                    window_loss, window_n, window_chars, window_t = 0.0, 0, 0, now
                if prog.step % t_cfg.checkpoint_every == 0:
                    save(latest)
                    last_saved_step = prog.step
                if signals.signum is not None:
                    save(latest)
                    raise Interrupted(signals.signum, latest)
            # the end: a last validation and checkpoint
            if has_val and (not prog.history["val"] or prog.history["val"][-1][0] != prog.step):
                last_val = validate()
                log(last_val, None, None, None)
            if last_saved_step != prog.step or not os.path.exists(latest):
                save(latest)
        finally:
            bar.close()
    return Result(prog, last_val, stop_reason, out_dir)


def _eta(t_cfg, prog):
    if t_cfg.max_minutes is None:
        return ""
    left = max(0.0, 60 * t_cfg.max_minutes - prog.elapsed_s)
    return f" {int(left // 60)}:{int(left % 60):02d} left"
