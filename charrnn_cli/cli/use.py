"""Using a trained model: `charrnn sample`, `eval` and `info`."""

import json
import math
import os
import sys

import click

from ..io.config import model_options
from .common import CONTEXT, load_checkpoint


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", metavar="CHECKPOINT.npz", type=click.Path())
@click.option("--seed", "prime", default=None, metavar="TEXT",
              help="Priming text fed through the model first (default: a newline, if the vocabulary has one).")
@click.option("--length", default=500, show_default=True, type=int, help="Characters to generate.")
@click.option("--temperature", default=1.0, show_default=True, type=float,
              help="Divides the logits: lower is more conservative, higher more surprising; must be > 0.")
@click.option("--top-k", type=int, default=None, help="Sample only among the K most likely characters.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None, metavar="P",
              help="Nucleus sampling: only among the fewest most likely characters whose probabilities "
                   "add up to P (after temperature and top-k).")
@click.option("--argmax", is_flag=True, help="Always take the most likely character (deterministic).")
@click.option("--rng-seed", type=click.IntRange(min=0), default=None,
              help="Seed (>= 0) for the sampling noise: the same seed, checkpoint and options give the same "
                   "text. It fixes the noise, not the text: different primes with one seed converge after "
                   "a few dozen characters, so compare prompts with different seeds.")
@click.option("--num-samples", default=1, show_default=True, type=int,
              help="Independent samples generated in one batched pass.")
@click.option("--skip-unknown", is_flag=True, help="Drop priming characters not in the vocabulary (with a warning).")
@click.option("--items", type=click.IntRange(min=1), default=None, metavar="N",
              help="Lines mode: N items, one per line, each from the start marker to the end marker "
                   "(--length caps each).")
@click.option("--novel", is_flag=True,
              help="With --items: only items that are not in the training file (data.path, read again).")
def sample(checkpoint, prime, length, temperature, top_k, top_p, argmax, rng_seed, num_samples, skip_unknown,
           items, novel):
    """Generate text from a checkpoint.

    \b
    Example:
        charrnn sample runs/shakespeare/best.npz --seed "ROMEO:" --length 300 --temperature 0.8
        charrnn sample runs/shakespeare/best.npz --num-samples 3 --rng-seed 1
    """
    import numpy as np

    from ..tools.sample import OptionError, check_options, default_prime, generate

    try:  # the API's checks, in its words; the option named as the command spells it
        check_options(length, temperature, top_k, top_p, num_samples, prime, items)
    except OptionError as e:
        flag = {"prime": "--seed", "items": "--items"}.get(e.option, "--" + e.option.replace("_", "-"))
        raise click.BadParameter(e.words, param_hint=flag) from None
    ck = load_checkpoint(checkpoint)
    vocab = ck.vocab
    if novel and items is None:
        raise click.BadParameter("goes with --items N", param_hint="--novel")
    if items is not None:
        return _sample_items(ck, items, novel, length, temperature, top_k, top_p, argmax, rng_seed)
    if prime is None:
        prime = default_prime(vocab)
    unknown = vocab.unknown(prime)
    if unknown:
        listed = " ".join(repr(c) for c in unknown)
        if not skip_unknown:
            raise click.ClickException(f"--seed has characters not in the vocabulary: {listed} "
                                       f"(use --skip-unknown to drop them)")
        click.echo(f"warning: dropped characters not in the vocabulary: {listed}", err=True)
        prime = "".join(c for c in prime if vocab.covers(c)) or default_prime(vocab)
    model = ck.build_model()
    rng = np.random.default_rng(rng_seed)
    out = sys.stdout
    try:
        for n, text in generate(model, vocab, prime, length, temperature, top_k, argmax, rng, num_samples, top_p):
            if num_samples > 1:
                out.write(f"--- sample {n + 1} of {num_samples} ---\n{text}\n")
            else:
                out.write(text)
            out.flush()
    except MemoryError:
        raise click.ClickException(f"out of memory: {num_samples:,} samples of {length:,} characters do not fit; "
                                   f"try a smaller --num-samples or --length") from None
    if num_samples == 1:
        out.write("\n")
        out.flush()


def _sample_items(ck, n, novel, length, temperature, top_k, top_p, argmax, rng_seed):
    import numpy as np

    from ..io.data import DataError
    from ..tools.sample import new_items, training_items

    if ck.config.data.mode != "lines" or "\n" not in ck.vocab:
        raise click.ClickException(f"{ck.path} was trained with data.mode {ck.config.data.mode}: --items needs a "
                                   f"model trained on items (data.mode: lines, or charrnn train FILE --lines)")
    try:
        known = training_items(ck.config.data.path, ck.path) if novel else set()
    except DataError as e:
        raise click.ClickException(str(e)) from None
    items, dropped, tries = new_items(ck.build_model(), ck.vocab, n, known, temperature, top_k, argmax,
                                      np.random.default_rng(rng_seed), length, top_p)
    for item in items:
        click.echo(item)
    if novel:
        click.echo(f"dropped {dropped['copies']:,} of {tries:,} sampled items as copies of training items", err=True)
    if dropped["empty"]:
        click.echo(f"dropped {dropped['empty']:,} empty items (the end marker at once): no training item is empty",
                   err=True)
    if dropped["cut"]:
        click.echo(f"{dropped['cut']:,} of the items reached --length {length:,} before their end marker and were "
                   f"cut there (the model's items may be longer: raise --length)", err=True)
    if len(items) < n:
        click.echo(f"stopped after {tries:,} tries with {len(items):,} of {n:,} items", err=True)


# ---- eval --------------------------------------------------------------------------------


@click.command("eval", context_settings=CONTEXT)
@click.argument("checkpoint", metavar="CHECKPOINT.npz", type=click.Path())
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def eval_(checkpoint, file, as_json):
    """Score FILE, or without FILE the run's own validation split: nats and bits per character.

    Every character after the first is predicted from all characters before it, starting from a
    zero state. Characters outside the vocabulary are counted and reported: scored as the unknown
    symbol when the model has one (data.min_count), else left out. Without
    FILE, the validation split is cut from the training data as training cut it (the last
    data.val_fraction of data.path, from the checkpoint's config).

    \b
    Example:
        charrnn eval runs/shakespeare/best.npz
        charrnn eval runs/shakespeare/best.npz data/tinyshakespeare.txt --json
    """
    from ..io.data import DataError
    from ..training.evaluate import bits, score_file, score_validation_split

    ck = load_checkpoint(checkpoint)
    unknown = {}
    if file is None:
        model = ck.build_model()
        try:
            nats, count, data_path = score_validation_split(ck, model, warn=lambda m: click.echo(m, err=True))
        except DataError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            raise click.ClickException(f"cannot read or write {e.filename or ''}: {e.strerror or e}") from None
        label = f"{data_path} (validation split, the last {ck.config.data.val_fraction:g})"
    else:
        if not os.path.exists(file):
            raise click.ClickException(f"file not found: {file}")
        if not os.path.isfile(file):
            raise click.ClickException(f"not a file: {file}")
        model = ck.build_model()
        try:
            nats, count, unknown = score_file(model, ck.vocab, file, lines=ck.config.data.mode == "lines")
        except DataError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            raise click.ClickException(f"cannot read {file}: {e.strerror or e}") from None
        label = file
    if count == 0:
        raise click.ClickException(f"{label}: nothing to score (fewer than two known characters)")
    n_unknown = sum(unknown.values())
    if as_json:
        click.echo(json.dumps({"file": file if file is not None else ck.config.data.path,
                               "split": "file" if file is not None else "validation",
                               "nats_per_char": nats, "bits_per_char": bits(nats), "chars": count,
                               "unknown_chars": n_unknown, "unknown_scored": ck.vocab.unk is not None,
                               "unknown": {c: k for c, k in sorted(unknown.items())}}))
        return
    click.echo(f"{label}: {nats:.4f} nats/char, {bits(nats):.4f} bits/char over {count:,} characters")
    if n_unknown:
        listed = ", ".join(f"{c!r} x{k}" for c, k in sorted(unknown.items(), key=lambda kv: -kv[1])[:10])
        what = "scored as the unknown symbol" if ck.vocab.unk is not None else "left out"
        click.echo(f"{what} {n_unknown:,} characters not in the vocabulary: {listed}")


# ---- info --------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", metavar="CHECKPOINT.npz", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(checkpoint, as_json):
    """Describe a checkpoint: model, vocabulary, progress, validation, config.

    \b
    Example:
        charrnn info runs/shakespeare/best.npz
    """
    import numpy as np

    from ..io.checkpoint import FORMAT_VERSION
    from ..training.evaluate import bits
    from ..training.state import divergence, final_loss

    ck = load_checkpoint(checkpoint, allow_nonfinite=True)
    m = ck.config.model
    n_params = sum(int(np.prod(ck.arrays[k].shape)) for k in ck.arrays if k.startswith(("rnn.", "decoder.")))
    val = ck.history("val")
    best = _finite_or_none(ck.scalar("train.best_val", math.nan))
    latest = _finite_or_none(float(val[-1, 3])) if len(val) else None
    judged = final_loss({"train": ck.history("train")}, latest)
    diverged = divergence(float(judged), len(ck.vocab), ck.config.training.learning_rate) if judged is not None else ""
    d = {
        "format_version": FORMAT_VERSION,
        "model": {"type": m.type, "num_layers": m.num_layers, "hidden_size": m.hidden_size, "dropout": m.dropout},
        "vocab_size": len(ck.vocab),
        "vocab": ck.vocab.chars,
        "parameters": n_params,
        "step": ck.scalar("train.step", 0),
        "epoch": ck.scalar("train.epoch", 0),
        "chars_seen": ck.scalar("train.chars_seen", 0),
        "elapsed_s": ck.scalar("train.elapsed_s", 0.0),
        "best_val_loss": best,
        "latest_val_loss": latest,
        "val_history": [[int(r[0]), _finite_or_none(float(r[3]))] for r in val],
        "nonfinite_parameters": ck.nonfinite,
        "diverged": bool(diverged),
        "config": ck.config.to_dict(),
    }
    if as_json:
        click.echo(json.dumps(d))
        return

    def fmt(v):
        return "-" if v is None else f"{v:.4f} nats/char ({bits(v):.4f} bits/char)"

    lines = [
        f"checkpoint      {checkpoint} (format version {d['format_version']})",
        f"model           {m.type}, {m.num_layers} layer(s) x {m.hidden_size} hidden, dropout {m.dropout}"
        f"{model_options(m)}",
        f"parameters      {n_params:,}",
        f"vocabulary      {len(ck.vocab)} characters: {ck.vocab.preview()}",
        f"progress        step {d['step']:,}, epoch {d['epoch']}, {d['chars_seen']:,} characters, "
        f"{d['elapsed_s']:.1f} s",
        f"validation      best {fmt(d['best_val_loss'])}; latest {fmt(d['latest_val_loss'])}",
    ]
    if diverged:
        lines.append(diverged)
    if ck.nonfinite:
        lines.insert(3, f"WARNING         NaN or infinite values in {', '.join(ck.nonfinite)}: the run diverged; "
                        f"sample and eval refuse this checkpoint")
    if len(val) > 1:
        lines.append(f"val history     {sparkline(val[:, 3])}  ({len(val)} evaluations, "
                     f"{val[0, 3]:.3f} -> {val[-1, 3]:.3f})")
    if any(r[1] is None for r in d["val_history"]):
        lines.append("                (non-finite validation losses are left out of the chart)")
    lines.append("config")
    for section, values in d["config"].items():
        for k, v in values.items():
            lines.append(f"  {section}.{k}: {json.dumps(v)}")
    click.echo("\n".join(lines))


def _finite_or_none(x):
    """JSON has no NaN or Infinity: non-finite numbers become null. _finite_or_none(float('inf')) is None"""
    return x if x is not None and math.isfinite(x) else None


def sparkline(values, width=40):
    """A one-line text chart; non-finite values show as a space. sparkline([3, 2, 1]) == '█▅▁'"""
    import numpy as np

    blocks = "▁▂▃▄▅▆▇█"
    v = np.asarray(values, dtype=np.float64)
    if len(v) > width:  # keep the last `width` points evenly spread
        v = v[np.linspace(0, len(v) - 1, width).round().astype(int)]
    ok = np.isfinite(v)
    if not ok.any():
        return " " * len(v)
    lo, hi = float(v[ok].min()), float(v[ok].max())
    span = hi - lo or 1.0
    return "".join(blocks[int(round((x - lo) / span * (len(blocks) - 1)))] if good else " "
                   for x, good in zip(v.tolist(), ok.tolist()))
