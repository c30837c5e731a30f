"""Before the first step: the encoded text, this process's streams, the checkpoint resumed from,
the memory the model needs, and the lines a run opens with."""

import math
import os

import numpy as np

from ..io import checkpoint as ckpt
from ..io.config import ConfigError, model_options
from ..io.cache import prepare
from ..io.data import DataError, Streams
from ..nn.cells import make_cell
from ..parallel.cores import blas_pin_note
from ..parallel.dist import on_writer
from .resume import _anchor_on_resume, _check_resume, _data_changes, _note_layout
from .trainer import Trainer


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
    G, H, L = make_cell(m.type).gates, m.hidden_size, m.num_layers
    ln = 2 if m.layer_norm else 0  # the gates' gain and shift; their n and gradient each chunk
    params = G * H * (V + H + 2 + ln) + (L - 1) * G * H * (2 * H + 2 + ln) + V * (H + 1)
    copies = 3 + {"adam": 2, "rmsprop": 1, "adagrad": 1, "sgd": 1}[t.optimizer]  # + gradient, scratch, team
    activations = L * (t.seq_length + 1) * t.batch_size * (G + 4 + ln * G) * H * 2
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
    """The data, this process's streams, the checkpoint resumed from and the Trainer: (run, ck)."""
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
    run = Trainer(cfg, corpus, streams, val_data, ck, echo, comm)
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
    echo(f"model: {cfg.model.type} {cfg.model.num_layers}x{cfg.model.hidden_size}{model_options(cfg.model)}, "
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


def _planned_steps(tcfg, streams):
    caps = []
    if tcfg.max_steps is not None:
        caps.append(tcfg.max_steps)
    if tcfg.max_epochs is not None:
        per_epoch = streams.steps_per_epoch + tcfg.random_cuts  # a shortened first chunk can add one step
        caps.append(math.ceil(tcfg.max_epochs * per_epoch))
    return min(caps) if caps else None
