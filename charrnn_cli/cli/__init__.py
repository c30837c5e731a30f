"""The command line: parse, validate, call the library, print. User errors become one line.

One module a group of commands: train.py (`charrnn train`), use.py (`sample`, `eval`, `info`),
tools.py (`plot`, `viz`, `gradcheck`); common.py holds what they share.
"""

import click

from .. import __version__
from .common import CONTEXT
from .tools import gradcheck, plot, viz
from .train import train
from .use import eval_, info, sample, sparkline  # noqa: F401  (sparkline: used by the tests)


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
    from ..training import signals

    signals.HOLD_AFTER_STOP = True
    main()


for command in (train, sample, eval_, info, plot, viz, gradcheck):
    main.add_command(command)
