"""The encoded cache: a text file's indices in a .npy beside a JSON of its vocabulary and stamp.

prepare() encodes a file into the cache (or reuses a valid one), reading it in chunks twice (once for
the vocabulary, once to encode), so memory stays flat however large the file is. A cache is reused
only while the file's stamp (size, modification and inode change times, inode, data.min_count) is
unchanged and the cache checks out whole; a damaged cache is encoded again. One process encodes a
given file at a time (a lock beside the cache); no temporary file is left on any way out.
"""

import hashlib
import json
import os

import numpy as np

from .data import CHUNK_BYTES, Corpus, DataError, Folded, Tokens, check_text_file, scan_vocab, text_chunks
from .files import removed_on_failure
from .locks import FileLock
from .vocab import Vocab


CACHE_VERSION = 3  # 2: the stamp holds the inode change time; 3: and data.min_count


def _cache_paths(path, cache_dir, mode="stream"):
    """(base, .npy, .json) paths of a file's cache: named after the file and a hash of its absolute path."""
    src = os.path.abspath(path)
    tag = hashlib.sha1(src.encode("utf-8")).hexdigest()[:12]
    stem = os.path.basename(src)
    base = os.path.join(cache_dir, f"{stem}.{tag}" + (".lines" if mode == "lines" else ""))
    return base, base + ".npy", base + ".json"


def _source_stamp(path, min_count=1):
    """What identifies the file's content without reading it. The inode change time (ctime) is set
    by the kernel on every write and cannot be set back, unlike the modification time that
    `cp -p`, `rsync -a` and tar restore; so a file edited in place never matches its old stamp."""
    st = os.stat(path)
    return {"source": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "version": CACHE_VERSION, "min_count": min_count}


def prepare(path, cache_dir, echo=None, mode="stream", expect=None, min_count=1):
    """Encode `path` into the cache (or reuse a valid one); the Corpus reads it on demand.

    A cache is reused only when the file's stamp is unchanged and the cache checks out whole
    (header, length, vocabulary, every index in range). A damaged cache is encoded again, with
    a line through `echo`. One process encodes a given file at a time (a lock beside the cache);
    the temporary file is removed on every way out, and any left by a killed process is swept.

    expect(vocab), when given, is called with the text's vocabulary before anything is written
    (a resumed run's check that the text has its characters): what it raises leaves no cache.
    The cache's files are no more readable by others than the text they encode.
    """
    check_text_file(path)
    base, npy, meta_path = _cache_paths(path, cache_dir, mode)
    corpus, damage = _reuse(npy, meta_path, _source_stamp(path, min_count))
    if corpus is not None:
        return corpus
    scanned = None  # (stamp before the scan, the scan): encoding reuses it rather than read the file again
    if expect is not None:
        scanned = (_source_stamp(path, min_count), scan_vocab(path, mode, min_count))
        expect(scanned[1][0])
    os.makedirs(cache_dir, exist_ok=True)
    with FileLock(base + ".lock"):  # another process encoding the same file: wait for it, then look again
        stamp = _source_stamp(path, min_count)
        corpus, damage = _reuse(npy, meta_path, stamp) if damage is None else (None, damage)
        if corpus is not None:
            return corpus
        if damage and echo is not None:
            echo(f"warning: the encoded cache {npy} is damaged ({damage}); encoding {path} again")
        return _encode(path, base, npy, meta_path, mode, min_count, scanned)


def _reuse(npy, meta_path, stamp):
    """(Corpus, None) for a valid cache; (None, None) when there is none or the file changed;
    (None, reason) when the cache is damaged."""
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError):
        return None, "its vocabulary file is not readable JSON"
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in stamp.items()):
        return None, None  # another file, or this one changed since it was encoded
    try:
        vocab = Vocab(meta["vocab"])
        n = int(meta["length"])
        data = Tokens.open_npy(npy)
    except FileNotFoundError:
        return None, "the .npy file is missing"
    except (KeyError, TypeError, ValueError, AssertionError, OverflowError, OSError) as e:
        return None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if data.dtype != vocab.index_dtype():
        return None, f"indices stored as {data.dtype}, expected {np.dtype(vocab.index_dtype())}"
    if len(data) != n:
        return None, f"{len(data):,} indices, expected {n:,}"
    size = os.path.getsize(npy)
    if size != data.offset + n * data.dtype.itemsize:
        return None, f"the .npy file has {size:,} bytes, expected {data.offset + n * data.dtype.itemsize:,} (truncated?)"
    step = CHUNK_BYTES // data.dtype.itemsize
    for i in range(0, n, step):  # every index in range: a few hundred ms per GB
        top = int(data.read(i, min(step, n - i)).max())
        if top >= len(vocab):
            return None, f"index {top} out of range for a vocabulary of {len(vocab)}"
    folded = Folded(*meta.get("folded", (0, 0)), stamp["min_count"])
    return Corpus(data, vocab, npy, True, str(meta.get("sha1", "")), folded), None


def _sweep_temporaries(base):
    """Remove temporary files of this cache left by killed processes (the caller holds the lock)."""
    folder, stem = os.path.split(base)
    own = (stem + ".npy.tmp", stem + ".json.tmp")  # this mode's only: the other mode has its own lock
    for name in os.listdir(folder or "."):
        if name.startswith(own):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _encode(path, base, npy, meta_path, mode="stream", min_count=1, scanned=None):
    _sweep_temporaries(base)
    stamp, (vocab, n, folded) = scanned or (_source_stamp(path, min_count), scan_vocab(path, mode, min_count))
    dtype = vocab.index_dtype()
    lut = vocab.encoding_table(dtype)  # code point -> index (folded characters: the unknown symbol's)
    tmp, tmp_meta = npy + f".tmp{os.getpid()}.npy", meta_path + f".tmp{os.getpid()}"
    with removed_on_failure(npy, tmp, tmp_meta):  # Ctrl-C, SIGTERM, a full disk: leave nothing behind
        header = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n,))  # writes the header
        offset = header.offset
        del header
        pos = 0
        digest = hashlib.sha1()  # of the encoded text: lets a resumed run see that its data changed
        with open(tmp, "r+b") as fh:  # plain sequential writes: nothing of the file stays mapped
            fh.seek(offset)
            for cps in text_chunks(path, mode):
                encoded = lut[cps].tobytes()
                fh.write(encoded)
                digest.update(encoded)
                pos += cps.size
            fh.flush()
            os.fsync(fh.fileno())
        if pos != n or _source_stamp(path, min_count) != stamp:
            raise DataError(f"data file changed while it was being read: {path}")
        meta = dict(stamp, length=n, sha1=digest.hexdigest(), vocab=vocab.codepoints.tolist(),
                    folded=[folded.distinct, folded.occurrences])
        with open(tmp_meta, "w", encoding="utf-8") as fh:
            json.dump(meta, fh)
        private = os.stat(path).st_mode & 0o666  # the text's readers, and no others, may read its cache
        for f in (tmp, tmp_meta):
            os.chmod(f, os.stat(f).st_mode & private)
        if os.path.exists(meta_path):  # no moment where an old vocabulary file vouches for a new .npy
            os.unlink(meta_path)
        os.replace(tmp, npy)
        os.replace(tmp_meta, meta_path)
    return Corpus(Tokens.open_npy(npy), vocab, npy, False, meta["sha1"], folded)


def find_cache(path, cache_dir, mode="stream", min_count=1):
    """The valid cache of `path` in cache_dir as a Corpus, or None; reads only, writes nothing."""
    try:
        _, npy, meta_path = _cache_paths(path, cache_dir, mode)
        return _reuse(npy, meta_path, _source_stamp(path, min_count))[0]
    except OSError:
        return None
