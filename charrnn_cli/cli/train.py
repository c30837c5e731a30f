"""`charrnn train`: the command, and every way a run can end as the line and exit code the user gets."""

import contextlib
import math
import os
import sys

import click

from ..io.config import ConfigError, overridden
from ..io.targets import (bundled_configs, bundled_folder, bundled_summary, config_for, find_target, is_config_path,
                          resume_path)
from ..parallel.cores import oversubscribed, plan_threads, set_threads
from .common import CONTEXT

# NumPy is imported inside the command, not here: `train --threads N` must set the BLAS thread
# count before NumPy loads its BLAS library and starts the thread pool.


@click.command(context_settings=CONTEXT)
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
    from ..parallel.dist import DistError, world
    from ..training.loop import train as run_training

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
    from ..io.checkpoint import CheckpointError
    from ..io.data import DataError
    from ..parallel.dist import DistError
    from ..training.runfolder import RunFolderError
    from ..training.signals import ForcedStop, exit_code, signal_name
    from ..training.state import Interrupted, TrainingError

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
    from ..training.signals import SignalGuard

    SignalGuard.ignore_from_now()
    if comm.size > 1 and not shared:
        sys.stderr.flush()
        comm.abort(code)
    sys.exit(code)


def _tqdm_echo(msg):
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)
