"""Going on with a run: what a checkpoint must share with the config and the data, what changed,
and how the schedule stays continuous when a resume moves its horizon."""

import os

from ..io import checkpoint as ckpt
from ..nn.optim import cosine_fraction


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
