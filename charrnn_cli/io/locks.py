"""Advisory file locks: one run per folder, one writer per encoded cache.

A lock is flock() on a small file that also holds the owner's "pid@host", so the process that
finds it taken can say who has it. The kernel drops the lock when its holder dies by any means
(SIGKILL included), so a lock file left on disk is never stale: only a live process holds it.
flock works on local disks and, on current Linux kernels, on NFS (emulated with POSIX locks).
Where the platform has no fcntl (Windows), locking is skipped.
"""

import os
import socket

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class LockTaken(RuntimeError):
    """Another live process holds the lock; .holder says who ("pid 123 on host", or "another process")."""

    def __init__(self, path, holder):
        super().__init__(path, holder)
        self.path, self.holder = path, holder


class FileLock:
    """An exclusive lock on `path`, held from acquire() until release() or the process's end."""

    def __init__(self, path):
        self.path = path
        self._fd = None

    def acquire(self, blocking=False):
        """Take the lock; raises LockTaken when not blocking and another process holds it."""
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockTaken(self.path, holder) from None
        except OSError:  # a filesystem without locks (ENOLCK): go on unlocked rather than refuse
            os.close(fd)
            return self
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self):
        return self.acquire(blocking=True)

    def __exit__(self, *exc):
        self.release()


def _read_holder(fd):
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another process"
