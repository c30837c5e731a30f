"""The command line: parse, validate, call the library, print. User errors become one line."""

import contextlib
import json
import math
import os
import sys

import click

from . import __version__
from .io.config import (ConfigError, bundled_configs, bundled_folder, bundled_summary, config_for, find_target,
                     is_config_path, load_config, overridden, resume_path)
from .parallel.cores import oversubscribed, plan_threads, set_threads

# NumPy is imported inside the commands, not here: `train --threads N` must set the BLAS thread
# count before NumPy loads its BLAS library and starts the thread pool.

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="charrnn")
def main():
    """Character-level RNN, LSTM and GRU language models in plain NumPy.

    \b
    Example:
        charrnn train configs/shakespeare.yaml
        charrnn sample runs/shakespeare/best.npz --seed "ROMEO:" --length 300
    """


def run():
    """The `charrnn` program: the command group, in a process that exits when it ends. Once a signal
    has stopped a run, later signals stay charrnn's until the exit (signals.HOLD_AFTER_STOP)."""
    from .training import signals

    signals.HOLD_AFTER_STOP = True
    main()


def _load_checkpoint(path, allow_nonfinite=False):
    from .io.checkpoint import CheckpointError, load

    try:
        return load(path, allow_nonfinite=allow_nonfinite)
    except CheckpointError as e:
        raise click.ClickException(str(e)) from None


# ---- train -------------------------------------------------------------------------------


@main.command(context_settings=CONTEXT)
@click.argument("target", metavar="[CONFIG.yaml|TEXT_FILE]", type=click.Path(dir_okay=False), required=False)
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value (YAML-typed); repeatable, e.g. --set training.max_steps=100.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None, metavar="N",
              help="Train for N minutes in this invocation (on --resume: N more minutes).")
@click.option("--resume", type=click.Path(), metavar="CHECKPOINT.npz",
              help="Continue exactly from a checkpoint (a run folder: its latest.npz); the run goes on in the "
                   "checkpoint's folder unless --set output.dir names another.")
@click.option("--overwrite", is_flag=True,
              help="Replace the run already in output.dir (its checkpoints and metrics) instead of refusing.")
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
              help="BLAS threads per process (default: training.threads, else the cores divided among the "
                   "processes that share each step, training.unit_split).")
@click.option("--lines", is_flag=True, help="Each line is an item (data.mode: lines): names, titles, words.")
@click.option("--quiet", is_flag=True, help="No progress bar or start-up lines; only the final summary.")
@click.option("--list", "list_configs", is_flag=True, help="List the bundled configs (charrnn train NAME) and exit.")
def train(target, overrides, minutes, resume, overwrite, threads, lines, quiet, list_configs):
    """Train a model as CONFIG.yaml describes, or the default model on TEXT_FILE, or go on with a run.

    Writes OUTPUT_DIR/latest.npz (every checkpoint_every steps and at the end), best.npz (whenever
    validation improves), metrics.jsonl and config.yaml (the config used). A folder that already
    holds a run is refused unless you --resume it or --overwrite it. Ctrl-C saves latest.npz and
    exits with 130 (SIGTERM: 143); a second Ctrl-C exits at once (still saving the last finished step).

    A TEXT_FILE (any path not ending in .yaml or .yml) trains the default model (an LSTM 2x384,
    10 minutes) on it into runs/NAME, NAME being the file's name without its extension.

    --resume alone goes on with the run as it was configured (the config stored in the checkpoint,
    with any --set applied on top); with a TEXT_FILE, on that text; with a CONFIG.yaml, as it says.

    A bundled config can be named: charrnn train tiny (charrnn train --list shows them); a file of
    that name in the current folder wins.

    \b
    Example:
        charrnn train mytext.txt --minutes 5
        charrnn train tiny
        charrnn train configs/shakespeare.yaml --set training.max_minutes=2
        charrnn train --resume runs/shakespeare/latest.npz --minutes 5
    """
    if list_configs:
        for name, path in bundled_configs().items():
            click.echo(f"{name:<20} {bundled_summary(path)}")
        click.echo(f"(in {bundled_folder('configs')}; charrnn train NAME trains one, a copy of its file can be edited)")
        return
    overrides = overrides + (("data.mode=lines",) if lines else ())
    resume = resume_path(resume)
    target, note = find_target(target)
    if note and not quiet:
        click.echo(note, err=True)
    if target is not None and resume is None and target.endswith(".npz"):
        raise click.ClickException(f"{target} is a checkpoint, not text: to go on with its run, "
                                   f"charrnn train --resume {target}")
    if target is None and resume is None:
        raise click.ClickException("give a CONFIG.yaml or TEXT_FILE to train on, or --resume CHECKPOINT.npz "
                                   "to go on with a run (charrnn train -h)")
    try:
        cfg = config_for(target, overrides, resume)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    asked = threads or cfg.training.threads
    planned = plan_threads(cfg.training, cfg.model, threads)
    if not set_threads(planned) and asked:
        click.echo(f"warning: NumPy was already loaded; --threads {asked} cannot change its thread pool", err=True)
    crowded = oversubscribed(cfg.training, cfg.model, planned)
    if crowded:
        click.echo(crowded, err=True)
    from .parallel.dist import DistError, world
    from .training.loop import train as run_training

    try:
        comm = world()  # one process, or this one's place in an MPI job
    except DistError as e:
        raise click.ClickException(str(e)) from None
    if not comm.is_writer:  # in a data-parallel job rank 0 alone speaks
        sys.stdout = sys.stderr = open(os.devnull, "w")
    echo = _tqdm_echo
    if resume is not None and not overridden(overrides, "output.dir"):
        folder = os.path.dirname(resume) or "."
        given = target is not None and is_config_path(target)  # not the run's own config: it may say otherwise
        if given and os.path.abspath(folder) != os.path.abspath(cfg.output.dir) and not quiet:
            echo(f"note: continuing in {folder}, the checkpoint's folder (the config says {cfg.output.dir}; "
                 f"--set output.dir=... to write elsewhere)")
        cfg.output.dir = folder
    with _run_ends(comm, cfg.output.dir):
        result = run_training(cfg, resume=resume, quiet=quiet, echo=echo, overwrite=overwrite, minutes=minutes,
                              comm=comm)
    for line in _summary(result, cfg):
        click.echo(line)


@contextlib.contextmanager
def _run_ends(comm, folder):
    """Every way a run can end but finishing, as the line and exit code the user gets: a user
    error, a signal, no memory, a file that cannot be written; a bug's traceback in an MPI job."""
    from .io.checkpoint import CheckpointError
    from .io.data import DataError
    from .parallel.dist import DistError
    from .training.runfolder import RunFolderError
    from .training.signals import ForcedStop, exit_code, signal_name
    from .training.state import Interrupted, TrainingError

    try:
        yield
    except (ConfigError, DataError, CheckpointError, TrainingError, RunFolderError, DistError) as e:
        raise click.ClickException(str(e)) from None  # every process of a job meets these alike
    except Interrupted as e:
        name = signal_name(e.signum)
        if e.path is None:
            click.echo(f"interrupted by {name} while preparing the data; nothing was saved", err=True)
        else:
            click.echo(f"interrupted by {name}: saved {e.path} at step {e.step:,}; "
                       f"resume with: charrnn train --resume {e.path}", err=True)
            click.echo(e.advice, err=True)
        _end(comm, exit_code(e.signum), shared=True)
    except ForcedStop as e:
        if e.path is not None:
            dropped = " (the step under way was dropped)" if e.dropped else ""
            click.echo(f"stopped at once by {e.nth} {signal_name(e.signum)}: saved {e.path} at step {e.step:,}"
                       f"{dropped}; resume with: charrnn train --resume {e.path}", err=True)
        else:
            latest = os.path.join(folder, "latest.npz")
            kept = (f"the checkpoints on disk are intact ({latest} is from the last save)" if os.path.exists(latest)
                    else "no checkpoint had been saved yet")
            click.echo(f"stopped at once by {e.nth} {signal_name(e.signum)}; {kept}", err=True)
        _end(comm, exit_code(e.signum), shared=False)
    except KeyboardInterrupt:  # before the training loop's own handler is installed
        click.echo("interrupted before training started; nothing was saved", err=True)
        _end(comm, 130, shared=False)
    except MemoryError as e:
        click.echo("Error: out of memory: try a smaller model.hidden_size or training.batch_size", err=True)
        _end(comm, 1, shared=getattr(e, "shared", False))
    except OSError as e:  # a full disk, a folder that cannot be written: name the file
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        click.echo(f"Error: cannot read or write{where}: {e.strerror or e}", err=True)
        _end(comm, 1, shared=getattr(e, "shared", False))
    except Exception:
        if comm.size == 1:
            raise
        import traceback

        traceback.print_exc(file=sys.__stderr__)  # a bug: say where, on whichever process met it
        comm.abort(1)


def _summary(result, cfg):
    """The lines a finished run ends with: why it stopped and where it got, the checkpoints, any warning."""
    p = result.progress
    val = result.val_loss
    val_text = (f"validation {val:.4f} nats/char ({val / math.log(2):.4f} bits/char), "
                f"best {p.best_val:.4f}") if not math.isnan(val) else "no validation split"
    if cfg.data.mode == "lines" and not math.isnan(result.val_per_item):
        val_text += f", {result.val_per_item:.3f} nats/item"
    reason = (f"stopped early (validation has not improved for {cfg.training.patience} evaluations, "
              f"training.patience)" if result.stop_reason == "patience" else f"stopped at {result.stop_reason}")
    yield (f"{reason}: step {p.step:,}, epoch {p.epoch + 0:,}, {p.chars_seen:,} characters in "
           f"{p.elapsed_s:.1f} s; {val_text}; checkpoints in {result.out_dir}")
    yield result.advice
    rising = _rising(p)
    if rising:
        yield rising
    if result.warning:
        yield result.warning


def _rising(p):
    """A line when validation ended well above its best: the model has been memorising its text."""
    val = p.history["val"]
    best = p.best_step()
    if best is None or not val or val[-1][0] <= best or not val[-1][3] > p.best_val * 1.01:
        return ""
    return (f"note: validation has been rising since step {best:,} ({p.best_val:.4f} -> {val[-1][3]:.4f}): the "
            f"model is memorising its training text; best.npz holds step {best:,} (training.patience stops "
            f"such a run early; a smaller model or more dropout memorises later)")


def _end(comm, code, shared):
    """Exit with `code`. A problem only this process of a data-parallel job met would leave the
    others waiting for it: end the whole job (MPI_Abort) unless every process met it too."""
    from .training.signals import SignalGuard

    SignalGuard.ignore_from_now()
    if comm.size > 1 and not shared:
        sys.stderr.flush()
        comm.abort(code)
    sys.exit(code)


def _tqdm_echo(msg):
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


# ---- sample ------------------------------------------------------------------------------


@main.command(context_settings=CONTEXT)
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

    from .tools.sample import OptionError, check_options, default_prime, generate

    try:  # the API's checks, in its words; the option named as the command spells it
        check_options(length, temperature, top_k, top_p, num_samples, prime, items)
    except OptionError as e:
        flag = {"prime": "--seed", "items": "--items"}.get(e.option, "--" + e.option.replace("_", "-"))
        raise click.BadParameter(e.words, param_hint=flag) from None
    ck = _load_checkpoint(checkpoint)
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

    from .io.data import DataError
    from .tools.sample import new_items, training_items

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


@main.command("eval", context_settings=CONTEXT)
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
    from .io.data import DataError
    from .training.evaluate import bits, score_file, score_validation_split

    ck = _load_checkpoint(checkpoint)
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


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint", metavar="CHECKPOINT.npz", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(checkpoint, as_json):
    """Describe a checkpoint: model, vocabulary, progress, validation, config.

    \b
    Example:
        charrnn info runs/shakespeare/best.npz
    """
    import numpy as np

    from .io.checkpoint import FORMAT_VERSION
    from .training.evaluate import bits
    from .training.state import divergence, final_loss

    ck = _load_checkpoint(checkpoint, allow_nonfinite=True)
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
        f"model           {m.type}, {m.num_layers} layer(s) x {m.hidden_size} hidden, dropout {m.dropout}",
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


# ---- plot --------------------------------------------------------------------------------


@main.command(context_settings=CONTEXT)
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", default="curves.png", show_default=True, type=click.Path(dir_okay=False),
              help="PNG file to write.")
@click.option("--title", default=None, help="Title above the panels.")
def plot(run_dirs, output, title):
    """Plot train and validation loss of one or more runs against characters seen and wall time.

    Needs matplotlib: pip install "charrnn[plot]". Without it, `charrnn info` shows the validation
    history as a text sparkline.

    \b
    Example:
        charrnn plot runs/shakespeare -o curves.png
        charrnn plot runs/rnn runs/gru runs/shakespeare -o compare.png
    """
    from .tools.plot import PlotError, plot_runs

    _check_output_folder(output)

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        click.echo("Error: charrnn plot needs matplotlib: pip install \"charrnn[plot]\" (or pip install matplotlib)",
                   err=True)
        sys.exit(2)
    try:
        plot_runs(list(run_dirs), output, title, warn=lambda m: click.echo(m, err=True))
    except PlotError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot write {output}: {e.strerror or e}") from None
    click.echo(f"wrote {output}")


# ---- viz ---------------------------------------------------------------------------------

VIZ_MAX_CHARS = 50_000  # a page of a small model: about 1 s and 6 MB
VIZ_JSON_MAX_CHARS = 1_000_000


def _check_output_folder(output):
    """An output file goes only into a folder that exists: -o never creates folders."""
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise click.ClickException(f"cannot write {output}: the folder {folder} does not exist")


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint", metavar="CHECKPOINT.npz", type=click.Path())
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default="viz.html", show_default=True, type=click.Path(dir_okay=False),
              help="HTML file to write (one self-contained page).")
@click.option("--max-chars", default=2000, show_default=True, type=click.IntRange(min=2, max=VIZ_JSON_MAX_CHARS),
              help=f"How much of FILE to show, from its start: at most {VIZ_MAX_CHARS:,} in a page (it holds every "
                   f"unit's activation at every character), {VIZ_JSON_MAX_CHARS:,} with --json.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per character (its nats and the top predictions) instead of a page.")
def viz(checkpoint, file, output, max_chars, as_json):
    """See what the model predicts and what its units track, in one HTML page.

    The page shows the text shaded by the model's surprise at each character (hover for its top 5
    predictions), any unit's activation over the text, and the units whose activation best tracks
    properties of the text (position in the line, brackets, quotes, words). It opens offline in
    any browser: CSS, JavaScript and data are inside it. The nats/char in its header are what
    `charrnn eval` gives on the same text.

    \b
    Example:
        charrnn viz runs/shakespeare/best.npz data/tinyshakespeare.txt -o viz.html
        charrnn viz runs/shakespeare/best.npz notes.txt --max-chars 500 --json > chars.jsonl
    """
    from .io.files import atomic_write
    from .tools.viz import analyze, find_units, mean_nats, page, page_data, records

    if not as_json:
        if max_chars > VIZ_MAX_CHARS:
            raise click.BadParameter(f"{max_chars:,} is more than a page shows (at most {VIZ_MAX_CHARS:,}; "
                                     f"--json takes up to {VIZ_JSON_MAX_CHARS:,})", param_hint="--max-chars")
        _check_output_folder(output)
    ck = _load_checkpoint(checkpoint)
    if os.path.exists(file) and not os.path.isfile(file):
        raise click.ClickException(f"{file} is not a regular file (a pipe or a device?): give a text file")
    try:
        with open(file, encoding="utf-8") as fh:
            text = fh.read(max_chars)
    except FileNotFoundError:
        raise click.ClickException(f"file not found: {file}") from None
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{file} is not valid UTF-8: bad byte at offset {e.start}") from None
    except OSError as e:
        raise click.ClickException(f"cannot read {file}: {e.strerror or e}") from None
    model = ck.build_model()
    result = analyze(model, ck.vocab, text, lines=ck.config.data.mode == "lines")
    if len(result["chars"]) < 2:
        raise click.ClickException(f"{file}: nothing to show (fewer than two characters in the vocabulary)")
    if result["dropped"]:
        click.echo(f"warning: left out {result['dropped']:,} characters not in the vocabulary", err=True)
    if as_json:
        for rec in records(result, ck.vocab):
            click.echo(json.dumps(rec, ensure_ascii=False))
        return
    m = ck.config.model
    title = (f"{checkpoint}: {m.type} {m.num_layers}x{m.hidden_size}, step {ck.scalar('train.step', 0):,}, "
             f"on {file}")
    units = find_units(result["acts"], result["chars"])
    text = page(page_data(result, ck.vocab, units, title))
    try:
        atomic_write(output, lambda fh: fh.write(text), binary=False)
    except OSError as e:
        raise click.ClickException(f"cannot write {output}: {e.strerror or e}") from None
    nats = mean_nats(result)
    click.echo(f"wrote {output} ({len(text.encode()) / 1e6:.1f} MB): {len(result['chars']):,} characters, "
               f"{nats:.4f} nats/char ({nats / math.log(2):.4f} bits/char); best units: "
               + "; ".join(f"layer {layer} {name}[{unit}] ~ {f} (r = {r:+.2f})"
                           for _, r, f, layer, name, unit in units[:3]))


# ---- gradcheck ---------------------------------------------------------------------------


@main.command(context_settings=CONTEXT)
@click.option("--model", "model_type", type=click.Choice(["rnn", "lstm", "gru"]), default=None,
              help="Check one cell type (default: all three).")
@click.option("--layers", default=2, show_default=True, type=click.IntRange(min=1), help="Stacked layers.")
@click.option("--hidden-size", default=6, show_default=True, type=click.IntRange(min=1), help="Units per layer.")
@click.option("--seq-length", default=5, show_default=True, type=click.IntRange(min=1), help="Time steps.")
@click.option("--batch-size", default=3, show_default=True, type=click.IntRange(min=1), help="Streams.")
@click.option("--vocab-size", default=5, show_default=True, type=click.IntRange(min=1), help="Characters.")
@click.option("--dropout", default=0.25, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Dropout probability (a fixed mask).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds parameters, data, state and masks.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Check the model a training config describes, at batch 2 and sequence length 4.")
@click.option("--tol", default=1e-6, show_default=True, type=float, help="Largest relative error that passes.")
def gradcheck(model_type, layers, hidden_size, seq_length, batch_size, vocab_size, dropout, seed, config_path, tol):
    """Check every hand-written gradient against centred finite differences in float64.

    Prints the largest relative error of each parameter tensor and of the initial state, for a
    chunk run as streams and again with state resets inside it (lines mode), and exits with 1 if
    any exceeds --tol.

    \b
    Example:
        charrnn gradcheck
        charrnn gradcheck --model lstm --layers 3 --hidden-size 10
        charrnn gradcheck --config configs/shakespeare.yaml
    """
    from .nn.gradcheck import FLOOR, check_model

    kw = {}
    if config_path is not None:
        try:
            cfg = load_config(config_path)
        except ConfigError as e:
            raise click.ClickException(str(e)) from None
        m = cfg.model
        model_types = [m.type]
        layers, hidden_size, dropout = m.num_layers, m.hidden_size, m.dropout
        seq_length, batch_size = min(cfg.training.seq_length, 4), min(cfg.training.batch_size, 2)
        kw = {"init": m.init, "init_scale": m.init_scale, "forget_bias": m.forget_bias, "max_entries": 20}
        vocab_size = max(vocab_size, 12)
    else:
        model_types = [model_type] if model_type else ["rnn", "lstm", "gru"]
    rows = []
    for resets in (False, True):  # and with state resets inside the chunk, as lines mode trains
        for mt in model_types:
            rows += check_model(mt, layers, hidden_size, vocab_size, seq_length, batch_size, dropout, seed,
                                resets=resets, **kw)
    click.echo(f"gradient check: float64, centred differences, error = |a - n| / max(|a| + |n|, {FLOOR:g}), "
               f"tolerance {tol:g}")
    click.echo(f"{'model':<12} {'tensor':<20} {'shape':<14} {'checked':>7} {'max rel error':>14}  result")
    failed = 0
    for r in rows:
        ok = r.max_rel_error <= tol
        failed += not ok
        shape = "x".join(map(str, r.shape))
        click.echo(f"{r.model:<12} {r.tensor:<20} {shape:<14} {r.checked:>7} {r.max_rel_error:>14.3e}  "
                   f"{'ok' if ok else 'FAIL'}")
    if failed:
        click.echo(f"{failed} of {len(rows)} tensors exceed the tolerance {tol:g}", err=True)
        sys.exit(1)
    click.echo(f"all {len(rows)} tensors within {tol:g}")
