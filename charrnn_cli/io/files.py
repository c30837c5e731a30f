"""Writing files so that no reader ever sees half of one, and no temporary file is left behind.

atomic_write(path, write) writes through a temporary file in the same folder (flushed and fsynced),
then renames it over `path`: a crash at any moment leaves the previous file intact. On every way
out (an error, Ctrl-C, SIGTERM turned into an exception, a full disk) the temporary file is
removed, and an OSError without a file name gets `path` as its name, so the user is told which
file could not be written.
"""

import contextlib
import os
import tempfile


def current_umask():
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def removed_on_failure(path, *temporaries):
    """Remove `temporaries` if the block fails; name `path` in an OSError that names no file."""
    try:
        yield
    except BaseException as e:
        for tmp in temporaries:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError) and e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), path) from None
        raise


def atomic_write(path, write, binary=True):
    """Call write(fh) on a temporary file beside `path`, then rename it to `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    with removed_on_failure(path, tmp):
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; others may read a run's files
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
