"""SIGINT and SIGTERM during a run: answered within a step, wherever they land.

A run is in one of two modes. Most of the time signals are *deferred*: the handler only notes
the signal, and the loop checks after each step, saves latest.npz and stops, so no update is
half-applied and no checkpoint half-written. Work that may run long and leaves nothing to
protect (preparing the data, a validation pass) is *interruptible*: there the handler raises
Stop at once. A second signal, in either mode, raises ForcedStop at once: files on disk stay
intact (checkpoints are written atomically, metrics lines whole) and the process exits; when it
lands in a step before the update, the step is dropped and the run saved as the one before left
it (training.TrainingLoop.forced). A save under way (`finishing`) is let finish despite a second
signal; a third ends it at once.
"""

import contextlib
import os
import signal

# SIGHUP (a closed terminal, a dropped ssh session) is answered as SIGTERM is. SIGQUIT (Ctrl-\\)
# keeps Python's default: it ends the process at once, without a save, for when nothing else will.
SIGNALS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())

# Set by the command line: once a signal has stopped a run, later signals are charrnn's until the
# process exits (noted, not Python's KeyboardInterrupt in the middle of the last message or of
# the interpreter's shutdown); a fourth ends the process at once with the first signal's code.
HOLD_AFTER_STOP = False


class Stop(BaseException):
    """A signal arrived during interruptible work. BaseException, like KeyboardInterrupt, so
    that no `except Exception` on the way up mistakes it for an error."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class ForcedStop(Stop):
    """A second signal: stop now. `path` and `step` name the checkpoint the stop saved, if it got
    to save one (the first signal's save, done before the second came, or the save of a step
    dropped before its update: `dropped`, training.TrainingLoop.forced), else None."""

    path = step = None
    dropped = False
    nth = "a second"  # which signal it was, for the message


def exit_code(signum):
    """The shell's convention, 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def signal_name(signum):
    return signal.Signals(signum).name


class SignalGuard:
    """Installs the handlers for its `with` block; `.signum` is the first signal seen, or None."""

    def __init__(self, interrupts=True):
        self.signum = None
        self.saved = None  # (path, step) once the stop's checkpoint is written: a later ForcedStop says so
        self.count = 0  # signals seen
        self._obeyed = 1  # signals taken as "stop at the next step"; one more raises ForcedStop
        self._interruptible = False
        self._interrupts = interrupts  # False for a data-parallel process: it stops only where all stop
        self._old = {}

    def __enter__(self):
        for sig in SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        held = HOLD_AFTER_STOP and self.count > 0
        for sig, old in self._old.items():
            signal.signal(sig, self._after_stop if held else old)
        self._old.clear()

    @staticmethod
    def ignore_from_now():
        """On the way out of a stopped run: ignore the signals outright. Python puts its default
        handlers back as it shuts down, and a Ctrl-C then would kill the process by SIGINT (exit
        status -2), but it keeps an ignored signal ignored."""
        if HOLD_AFTER_STOP:
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    def _after_stop(self, signum, frame):
        """A signal after the run has stopped and saved: the process is on its way out."""
        self.count += 1
        if self.count > 3:
            os._exit(exit_code(self.signum or signum))

    def _handle(self, signum, frame):
        self.count += 1
        if self.count > self._obeyed:
            stop = ForcedStop(signum)
            stop.nth = {2: "a second", 3: "a third"}.get(self.count, "another")
            if self.saved:
                stop.path, stop.step = self.saved
            raise stop
        if self.signum is None:
            self.signum = signum
            if self._interruptible:
                raise Stop(signum)

    @contextlib.contextmanager
    def finishing(self):
        """A save that is let finish: until the block ends a second signal is only noted (the run
        stops after it, as for the first), and a third raises ForcedStop. An impatient double Ctrl-C
        then does not cost the save that the first one asked for."""
        self._obeyed = 2
        try:
            yield
        finally:
            self._obeyed = 1

    @contextlib.contextmanager
    def interruptible(self):
        """A block that a signal ends at once (raising Stop) instead of at the next step."""
        if self.signum is not None and self._interrupts:
            raise Stop(self.signum)
        self._interruptible = self._interrupts
        try:
            yield
        finally:
            self._interruptible = False
