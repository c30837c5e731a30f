"""What the user watches while a run trains: a progress bar on a terminal, plain lines elsewhere.

On a terminal, tqdm's bar redraws one line in place. Written to a file or a pipe (a cluster job's
output file, `charrnn train ... 2> log`, mpiexec's relay) the same bar would be hundreds of
redraws a minute on one ever-growing line (about 18 KB for a 20-second run), so there the run
prints a plain line instead: at the first report, at each validation, and otherwise at most once
every PLAIN_EVERY_S seconds.

    view = ProgressBar(total, initial, quiet, echo)
    view.step()                               # one more step
    view.report(step, "ep 0.15 loss ...", evaluated)
    view.close()
"""

import sys
import time

PLAIN_EVERY_S = 30.0  # seconds between plain lines, validations aside


def is_terminal(stream):
    """Whether `stream` is a terminal (False for a file, a pipe, a closed or replaced stream)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class ProgressBar:
    """tqdm's bar on a terminal, plain lines through `echo` elsewhere; nothing when quiet."""

    def __init__(self, total, initial, quiet, echo, stream=None, every_s=PLAIN_EVERY_S):
        from tqdm import tqdm

        stream = sys.stderr if stream is None else stream
        self.plain = not quiet and not is_terminal(stream)
        self.total, self.echo, self.every_s = total, echo, every_s
        self.last_line = -float("inf")  # the first report prints at once
        self.bar = tqdm(total=total, initial=initial, disable=quiet or self.plain, unit="step", file=stream,
                        dynamic_ncols=True, leave=True)

    def step(self):
        self.bar.update(1)

    def report(self, step, status, evaluated=False):
        """The run's status after `step` (loss, validation, speed, time left)."""
        self.bar.set_postfix_str(status)
        now = time.monotonic()
        if self.plain and (evaluated or now - self.last_line >= self.every_s):
            of = f" of {self.total:,}" if self.total else ""
            self.echo(f"step {step:,}{of}: {status}")
            self.last_line = now

    def close(self):
        self.bar.close()
