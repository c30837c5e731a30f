"""`charrnn plot`, `viz` and `gradcheck`."""

import itertools
import json
import math
import os
import sys

import click

from ..io.config import ConfigError, load_config
from .common import CONTEXT, load_checkpoint


@click.command(context_settings=CONTEXT)
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
    from ..tools.plot import PlotError, plot_runs

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


@click.command(context_settings=CONTEXT)
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
    from ..io.files import atomic_write
    from ..tools.viz import analyze, find_units, mean_nats, page, page_data, records

    if not as_json:
        if max_chars > VIZ_MAX_CHARS:
            raise click.BadParameter(f"{max_chars:,} is more than a page shows (at most {VIZ_MAX_CHARS:,}; "
                                     f"--json takes up to {VIZ_JSON_MAX_CHARS:,})", param_hint="--max-chars")
        _check_output_folder(output)
    ck = load_checkpoint(checkpoint)
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


@click.command(context_settings=CONTEXT)
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
    from ..nn.gradcheck import FLOOR, check_model

    kw = {}
    if config_path is not None:
        try:
            cfg = load_config(config_path)
        except ConfigError as e:
            raise click.ClickException(str(e)) from None
        m = cfg.model
        model_types, options = [(m.type, m.layer_norm)], ((m.weight_drop, m.embedding),)
        layers, hidden_size, dropout = m.num_layers, m.hidden_size, m.dropout
        seq_length, batch_size = min(cfg.training.seq_length, 4), min(cfg.training.batch_size, 2)
        kw = {"init": m.init, "init_scale": m.init_scale, "forget_bias": m.forget_bias, "max_entries": 20}
        vocab_size = max(vocab_size, 12)
    else:
        model_types = [(t, ln) for t in ([model_type] if model_type else ["rnn", "lstm", "gru"])
                       for ln in ((False, True) if t == "lstm" else (False,))]  # the LSTM with model.layer_norm too
        options = ((0.0, 0), (0.25, 0), (0.0, 3))  # and each with model.weight_drop, with model.embedding
    rows = []
    for resets in (False, True):  # and with state resets inside the chunk, as lines mode trains
        for (mt, ln), (wd, emb) in itertools.product(model_types, options):
            rows += check_model(mt, layers, hidden_size, vocab_size, seq_length, batch_size, dropout, seed,
                                resets=resets, layer_norm=ln, weight_drop=wd, embedding=emb, **kw)
    click.echo(f"gradient check: float64, centred differences, error = |a - n| / max(|a| + |n|, {FLOOR:g}), "
               f"tolerance {tol:g}")
    click.echo(f"{'model':<15} {'tensor':<20} {'shape':<14} {'checked':>7} {'max rel error':>14}  result")
    failed = 0
    for r in rows:
        ok = r.max_rel_error <= tol
        failed += not ok
        shape = "x".join(map(str, r.shape))
        click.echo(f"{r.model:<15} {r.tensor:<20} {shape:<14} {r.checked:>7} {r.max_rel_error:>14.3e}  "
                   f"{'ok' if ok else 'FAIL'}")
    if failed:
        click.echo(f"{failed} of {len(rows)} tensors exceed the tolerance {tol:g}", err=True)
        sys.exit(1)
    click.echo(f"all {len(rows)} tensors within {tol:g}")
