"""The run folder (output.dir): who may write it, what a new run may replace, the metrics log.

    latest.npz     every checkpoint_every steps, at the end and on a signal
    best.npz       whenever the validation loss improves
    metrics.jsonl  one JSON object per line
    .lock          held (flock) by the run training here, released when its process ends

Rules, checked before any work:
- the folder must be writable;
- one run at a time: a second run into a locked folder is refused, naming the holder;
- a new run never replaces an old one silently: a folder holding a run is refused unless the
  run continues it (--resume with a checkpoint from this folder) or --overwrite is given.
On resume, metrics.jsonl keeps only the lines up to the checkpoint's step, so a run killed
after its last checkpoint does not log those steps twice. Lines are written whole: a write
that fails (a full disk) is cut back off, and readers skip a torn last line with a warning.
"""

import json
import math
import os
import tempfile

from ..io.files import atomic_write
from ..io.locks import FileLock, LockTaken

RUN_FILES = ("latest.npz", "best.npz", "metrics.jsonl")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked: the message says why and the ways on."""


def _json_safe(v):
    """JSON has no NaN or Infinity (strict readers reject them): non-finite floats become null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


class RunFolder:
    def __init__(self, path):
        self.path = path
        self.latest = os.path.join(path, "latest.npz")
        self.best = os.path.join(path, "best.npz")
        self.metrics = os.path.join(path, "metrics.jsonl")
        self.config = os.path.join(path, "config.yaml")
        self._lock = FileLock(os.path.join(path, ".lock"))
        self._log_fd = None
        self.replacing = self.continuing = False

    def holds_run(self):
        """The run files present in the folder."""
        return [f for f in RUN_FILES if os.path.exists(os.path.join(self.path, f))]

    def claim(self, resume=None, overwrite=False):
        """Check the folder is writable, lock it, and refuse to replace a run by accident.

        `resume` is the checkpoint this run continues from: one inside this folder continues its run.
        """
        try:
            os.makedirs(self.path, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".write-test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise RunFolderError(f"output folder {self.path} is not writable: {e.strerror or e}") from None
        try:
            self._lock.acquire()
        except LockTaken as e:
            raise RunFolderError(f"another run ({e.holder}) is training in {self.path}; wait for it to end, "
                                 f"or train into another folder with --set output.dir=...") from None
        self._sweep()
        continuing = resume is not None and _same_path(os.path.dirname(os.path.abspath(resume)), self.path)
        present = self.holds_run()
        self.replacing = bool(present) and not continuing  # only with overwrite, below
        self.continuing = continuing
        if present and not continuing and not overwrite:
            self.release()
            saved = [p for p in (self.latest, self.best) if os.path.exists(p)]
            how = (f"continue it with charrnn train --resume {saved[0]}, or start a new one" if saved else
                   "it saved no checkpoint to go on from; start it again")
            raise RunFolderError(
                f"{self.path} already holds a run ({', '.join(present)}); {how} with --set output.dir=NEW_FOLDER "
                f"or --overwrite (which replaces it)")
        if continuing and not overwrite:
            self._refuse_going_back(resume)
        return self

    def _refuse_going_back(self, resume):
        """A resume from an older checkpoint of this folder (best.npz from before the last save, a
        copy) would go on over the run's later steps: its next saves replace latest.npz and best.npz.
        Refuse unless --overwrite; a latest.npz that cannot be read (the reason to go back) is no bar."""
        from ..io.checkpoint import saved_step  # NumPy: loaded by now, not when this module is imported

        if not os.path.exists(self.latest) or _same_path(resume, self.latest):
            return
        behind, ahead = saved_step(resume), saved_step(self.latest)
        if behind is None or ahead is None or ahead <= behind:
            return
        self.release()
        raise RunFolderError(
            f"{resume} is at step {behind:,}, behind {self.latest} at step {ahead:,}: going on from it here "
            f"would replace the run's {ahead - behind:,} later steps. Go on from where the run stands with "
            f"charrnn train --resume {self.latest}; from {resume} into another folder with --set "
            f"output.dir=NEW_FOLDER; or add --overwrite to replace them")

    def _sweep(self):
        """Remove temporary files a process killed mid-write left here (we hold the lock: no live
        run writes this folder), such as a half-written .latest.npz.*.tmp after SIGKILL."""
        names = ["." + f for f in RUN_FILES + ("config.yaml",)] + [".write-test."]
        for name in os.listdir(self.path):
            if any(name.startswith(n) for n in names) and (name.endswith(".tmp") or name.startswith(".write-test.")):
                try:
                    os.unlink(os.path.join(self.path, name))
                except OSError:
                    pass

    def start(self, resumed_step=None):
        """Called just before the run's first write: clears a replaced run, trims a resumed one's log."""
        if self.replacing:
            for f in RUN_FILES:
                try:
                    os.unlink(os.path.join(self.path, f))
                except FileNotFoundError:
                    pass
        elif self.continuing and resumed_step is not None and os.path.exists(self.metrics):
            self._trim_metrics(resumed_step)
        self._log_fd = os.open(self.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def save_config(self, cfg):
        """config.yaml: the config this run used, resolved, ready to copy and edit."""
        import yaml

        text = ("# The config this run used (every key, defaults included); copy it and edit to change more.\n"
                + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        _atomic_write_text(self.config, text)

    def _trim_metrics(self, step):
        """Keep the lines up to `step` (those past it were logged after the checkpoint resumed from)."""
        kept = [r for r in read_metrics(self.metrics, strict=False) if r.get("step", 0) <= step]
        _atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record):
        """Append one line whole: on a failed or short write, the file is cut back to where it was."""
        data = (json.dumps({k: _json_safe(v) for k, v in record.items()}, allow_nan=False) + "\n").encode()
        size = os.fstat(self._log_fd).st_size
        try:
            written = os.write(self._log_fd, data)
            if written != len(data):
                raise OSError(28, "No space left on device (short write)")
        except OSError as e:
            try:
                os.ftruncate(self._log_fd, size)
            except OSError:
                pass
            raise OSError(e.errno, e.strerror or str(e), self.metrics) from None

    def release(self):
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        self._lock.release()


class OtherProcessFolder(RunFolder):
    """The run folder as seen by a data-parallel process other than the writer: same paths,
    nothing claimed, locked or written (rank 0 does all of that)."""

    def claim(self, resume=None, overwrite=False):
        return self

    def start(self, resumed_step=None):
        pass

    def save_config(self, cfg):
        pass

    def log(self, record):
        pass

    def release(self):
        pass


def _atomic_write_text(path, text):
    atomic_write(path, lambda fh: fh.write(text), binary=False)


def _same_path(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def read_metrics(path, warn=None, strict=True):
    """The records of a metrics.jsonl. A torn last line (a write cut short) is skipped, with a
    line through `warn`; a bad line elsewhere raises ValueError naming it (skipped if not strict)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().split("\n")
    records = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            if not isinstance(r, dict):
                raise ValueError
        except ValueError:
            if i == last or not strict:
                if warn is not None:
                    what = "a torn last line" if i == last else f"line {i + 1}, not JSON"
                    warn(f"warning: {path}: skipped {what} ({len(line)} characters)")
                continue
            raise ValueError(f"{path}: line {i + 1} is not JSON") from None
        records.append(r)
    return records
