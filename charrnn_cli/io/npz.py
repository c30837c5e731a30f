"""Reading an .npz from someone else: one member at a time, each only after its header is checked.

An .npz is a zip of .npy files; each .npy holds a magic, a header (dtype, order, shape) and the
data. A member's header may claim any size and its deflated data may inflate to gigabytes, so a
member is read only when the bytes its header claims are within a bound the caller gives (the
checkpoint's: what its config implies); Python objects (pickles) are never read, and a member
holding less than its header says is called truncated.
"""

import math
import zipfile
import zlib

import numpy as np

from .yaml_reader import short


class NpzError(ValueError):
    """A member that cannot be read: the message names it and says why."""


MAX_MEMBERS = 4096


SMALL = 1 << 20  # bytes: config_json, rng_state, data.sha1, optim.name, every scalar


MAX_VOCAB_BYTES = 0x110000 * 8  # every Unicode code point as an int64


class Members:
    """The .npy members of an .npz, each read only after its header's size is checked against a
    bound (numpy.lib.format: the magic, a header dict with dtype, order and shape, then the data)."""

    def __init__(self, path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, EOFError, ValueError):
            raise NpzError(f"{path} is not a charrnn checkpoint (not a complete .npz file)") from None
        infos = self.zip.infolist()
        if len(infos) > MAX_MEMBERS:
            self.zip.close()
            raise NpzError(f"{path} is not a charrnn checkpoint ({len(infos):,} members)")
        self.names = [i.filename[:-4] for i in infos if i.filename.endswith(".npy")]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def header(self, name):
        """(shape, dtype, bytes the data should hold) from the member's header."""
        with self.zip.open(name + ".npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
        return shape, dtype, math.prod(int(n) for n in shape) * dtype.itemsize

    def read(self, name, limit):
        """The array `name`, or None when there is none; CheckpointError when its header claims more
        than `limit` bytes, it holds Python objects, or it holds less than its header says."""
        if name not in self.names:
            return None
        where = f"{self.path}: array {name}"
        try:
            shape, dtype, nbytes = self.header(name)
            if dtype.hasobject:
                raise NpzError(f"{where} holds Python objects (a pickle), which charrnn never loads")
            if nbytes > limit:
                raise NpzError(f"{where} claims shape {short(shape)} ({nbytes:,} bytes), more than this "
                                      f"checkpoint's config allows ({limit:,} bytes)")
            with self.zip.open(name + ".npy") as fh:
                return np.lib.format.read_array(fh, allow_pickle=False)
        except NpzError:
            raise
        except ValueError as e:
            if "EOF" in str(e) or "cannot reshape" in str(e):
                raise NpzError(f"{where} holds fewer bytes than its header says (truncated or damaged)") \
                    from None
            raise NpzError(f"{where} is not a valid .npy array ({short(str(e))})") from None
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise NpzError(f"{self.path} is corrupt ({short(str(e))})") from None

