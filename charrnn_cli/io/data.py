"""Text to integer streams: UTF-8 decoding in chunks, the vocabulary, and batched chunks.

The encoded text lives in a cache (cache.py); training reads it with positioned reads (os.pread)
a chunk at a time rather than through a memory map (`Tokens`), so pages of a multi-GB file never
pile up in the process's resident memory.

Streams cut a split into `batch_size` contiguous streams. Chunk j of an epoch holds characters
[j*T, j*T + T) of every stream as inputs and the characters one further on as targets, so
the hidden state at the end of chunk j is the right start for chunk j + 1.
"""

import codecs
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from .vocab import UNKNOWN, Vocab

CHUNK_BYTES = 1 << 22  # 4 MiB per read: bounds memory, big enough for NumPy to be fast
_MAX_CP = 0x110000


class DataError(ValueError):
    """A user error about the text file: the message says what and where."""


def codepoint_chunks(path):
    """Yield the file's code points chunk by chunk (uint8 for pure-ASCII chunks, else uint32)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"data path is a directory, not a file: {path}") from None
    except PermissionError:
        raise DataError(f"data file is not readable: {path}") from None
    with fh:
        while True:
            try:
                b = fh.read(CHUNK_BYTES)
            except IsADirectoryError:
                raise DataError(f"data path is a directory, not a file: {path}") from None
            final = not b
            pending = len(decoder.getstate()[0])
            raw = np.frombuffer(b, dtype=np.uint8)
            if pending == 0 and raw.size and raw.max() < 128:
                yield raw  # ASCII: bytes are code points
            else:
                try:
                    text = decoder.decode(b, final)
                except UnicodeDecodeError as e:
                    raise DataError(f"{path} is not valid UTF-8: bad byte at offset {offset - pending + e.start} "
                                    f"(a text in another encoding converts with iconv -f LATIN1 -t UTF-8, say)") from None
                if text:
                    yield np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            offset += len(b)
            if final:
                return


NEWLINE = 10


def as_lines(chunks):
    """Code point chunks of a text read as items, one per non-empty line (lines mode): a newline
    before every item and after the last (the start and end marker), carriage returns dropped,
    runs of newlines (empty lines) folded into one.
    >>> np.concatenate(list(as_lines([np.array([97, 10, 10, 98, 13, 10, 99], np.uint8)]))).tolist()
    [10, 97, 10, 98, 10, 99, 10]
    """
    last = NEWLINE
    yield np.array([NEWLINE], dtype=np.uint8)
    for cps in chunks:
        cps = cps[cps != 13]
        if cps.size == 0:
            continue
        nl = cps == NEWLINE
        after_nl = np.empty_like(nl)
        after_nl[0] = last == NEWLINE
        after_nl[1:] = nl[:-1]
        out = cps[~(nl & after_nl)]
        if out.size:
            last = int(out[-1])
            yield out
    if last != NEWLINE:
        yield np.array([NEWLINE], dtype=np.uint8)


def items_of(text):
    """The items of a text in lines mode: its non-empty lines, carriage returns dropped, as as_lines
    reads them. items_of("a\r\n\nb\n") == ['a', 'b']"""
    return [line for line in text.replace("\r", "").split("\n") if line]


def as_items_text(text):
    """The text as lines mode trains on it: each item between newline markers, as as_lines gives."""
    return "\n" + "\n".join(items_of(text)) + "\n"


def text_chunks(path, mode="stream"):
    """The code points training reads: the file as it is (stream), or as items (lines)."""
    return as_lines(codepoint_chunks(path)) if mode == "lines" else codepoint_chunks(path)


def scan_vocab(path, mode="stream", min_count=1):
    """(Vocab, number of characters, Folded) of a UTF-8 file, read in chunks: characters seen
    fewer than min_count times (never the newline) are folded into the unknown symbol."""
    counts = np.zeros(_MAX_CP, dtype=np.int64)
    n = 0
    for cps in text_chunks(path, mode):
        c = np.bincount(cps)
        counts[: c.size] += c
        n += cps.size
    rare = (counts > 0) & (counts < min_count)
    rare[NEWLINE] = False
    keep = (counts > 0) & ~rare
    folded = Folded(int(rare.sum()), int(counts[rare].sum()), min_count)
    if folded.distinct:
        keep[ord(UNKNOWN)] = True
    return Vocab(np.flatnonzero(keep)), n, folded


@dataclass
class Folded:
    """What min_count folded into the unknown symbol: distinct characters and their occurrences."""
    distinct: int = 0
    occurrences: int = 0
    min_count: int = 1

    def describe(self, n):
        """The opening line's phrase, or '' when nothing was folded."""
        if not self.distinct:
            return ""
        return (f"{self.distinct:,} rare character{'s' * (self.distinct != 1)} (seen fewer than {self.min_count} "
                f"times: {self.occurrences:,} of the text's {n:,}, {self.occurrences / max(n, 1):.3%}) folded into "
                f"the unknown symbol {UNKNOWN!r} (data.min_count)")


class Tokens:
    """A read-only 1-D array of indices in a .npy file, read on demand with os.pread.

    Slicing with a step of 1 gives another Tokens (no I/O); np.asarray(tokens) reads everything.
    """

    def __init__(self, path, offset, dtype, length, start=0):
        self.path, self.offset, self.dtype = path, offset, np.dtype(dtype)
        self.start, self.length = start, length
        self._fd = None

    @classmethod
    def open_npy(cls, path):
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
        if len(shape) != 1 or fortran:
            raise ValueError(f"{path}: not a 1-D array")
        return cls(path, offset, dtype, shape[0])

    def __len__(self):
        return self.length

    def __getstate__(self):  # a file descriptor does not travel
        return dict(self.__dict__, _fd=None)

    def read(self, i, n):
        """Elements [i, i + n) as a new array."""
        assert 0 <= i and i + n <= self.length, (i, n, self.length)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        size = self.dtype.itemsize
        where = self.offset + (self.start + i) * size
        if hasattr(os, "pread"):
            buf = os.pread(self._fd, n * size, where)
        else:  # Windows has no pread: seek, then read
            os.lseek(self._fd, where, os.SEEK_SET)
            buf = os.read(self._fd, n * size)
        return np.frombuffer(buf, dtype=self.dtype, count=n).copy()

    def __getitem__(self, key):
        assert isinstance(key, slice), "Tokens supports contiguous slices; use read() for values"
        a, b, step = key.indices(self.length)
        assert step == 1, "only contiguous slices"
        return Tokens(self.path, self.offset, self.dtype, max(b - a, 0), self.start + a)

    def __array__(self, dtype=None, copy=None):
        out = self.read(0, self.length)
        return out if dtype is None else out.astype(dtype)

    def __iter__(self):
        return iter(np.asarray(self).tolist())

    def __del__(self):
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass


@dataclass
class Corpus:
    data: "Tokens"  # (N,) indices, read from the cache file on demand
    vocab: Vocab
    cache_path: str
    reused: bool  # True when an existing cache was valid
    sha1: str = ""  # of the encoded text, to tell whether a resumed run's data changed
    folded: "Folded" = None  # what data.min_count folded into the unknown symbol

    def split(self, val_fraction, lines=False):
        """Contiguous (train, val): the last val_fraction of the characters is validation.

        lines: the cut moves back to the newline that starts an item, so validation holds whole
        items; that newline ends the training split's last item and starts validation's first."""
        n = len(self.data)
        n_val = int(n * val_fraction)
        if not lines or n_val == 0:
            return self.data[: n - n_val], self.data[n - n_val :]
        k = self.item_start_at_or_before(n - n_val)
        return self.data[: k + 1], self.data[k:]

    def item_start_at_or_before(self, k):
        """The position of the last newline at or before k (0 if there is none)."""
        return last_newline(self.data, k, self.vocab.index("\n"))


def last_newline(data, k, nl):
    """The position of the last `nl` in data[: k + 1], or 0. last_newline(np.array([1, 0, 2, 0, 3]), 2, 0) == 1"""
    k = min(k, len(data) - 1)
    while k > 0:
        lo = max(0, k - 4096)
        hits = np.flatnonzero(np.asarray(data[lo : k + 1]) == nl)
        if hits.size:
            return lo + int(hits[-1])
        k = lo - 1 if lo > 0 else 0
    return 0


def check_text_file(path, what="data file"):
    """DataError unless `path` is a regular, non-empty file: a pipe or a device would block a
    read, or never end it."""
    if os.path.isdir(path):
        raise DataError(f"{what.split()[0]} path is a directory, not a file: {path}")
    if not os.path.exists(path):
        raise DataError(f"{what} not found: {os.path.abspath(path)}")
    if not os.path.isfile(path):
        raise DataError(f"{what} is not a regular file (a pipe, socket or device?): {path}")
    if os.path.getsize(path) == 0:
        raise DataError(f"{what} is empty: {path}")


def read_validation_split(path, vocab, val_fraction, mode="stream", min_count=1):
    """(indices, sha1 of the whole encoded text) of the validation split of `path` as training
    cuts it (Corpus.split), encoded with `vocab` in memory: nothing is written. Reads the file
    twice, the second time keeping only the split; DataError when its characters are not `vocab`'s.
    >>> import tempfile; f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False); _ = f.write("abcabcabca"); f.close()
    >>> read_validation_split(f.name, Vocab.from_text("abc"), 0.3)[0].tolist()
    [1, 2, 0]
    """
    check_text_file(path)
    found, n, _ = scan_vocab(path, mode, min_count)
    if found != vocab:
        raise DataError(f"{path} has other characters than the model was trained on: it changed since")
    lut = vocab.encoding_table(vocab.index_dtype())
    n_val = int(n * val_fraction)
    cut = n - n_val  # the split starts here; in lines mode at the last newline at or before it
    lines = mode == "lines" and n_val > 0
    nl = vocab.index("\n") if lines else None
    digest, kept, pos = hashlib.sha1(), [], 0
    for cps in text_chunks(path, mode):
        idx = lut[cps]
        digest.update(idx.tobytes())
        end = pos + idx.size
        if lines and pos <= cut:  # the part up to the cut: keep what follows its last newline
            upto = idx[: cut - pos + 1]
            hits = np.flatnonzero(upto == nl)
            if hits.size:
                kept = [idx[hits[-1]:]]
            else:
                kept.append(idx)
        elif end > cut:
            kept.append(idx[max(cut - pos, 0):])
        pos = end
    data = np.concatenate(kept) if kept else np.zeros(0, dtype=lut.dtype)
    return data, digest.hexdigest()


class Streams:
    """`batch_size` contiguous streams over `data`, read `seq_length` characters at a time.

    Stream b covers inputs data[b*L : (b+1)*L] and targets one character later, L = (N - 1) // B;
    an epoch is ceil(L / T) chunks (the last may be shorter), so it reads every input once.
    `block` = (first, end) keeps only those streams (one process's share of a data-parallel run):
    the streams are cut as for all B, so together the processes read what one process would.
    `align` moves each stream's start back to an item's start (lines mode), so no stream begins
    inside an item; a stream then reads a little of the next stream's first item again.
    >>> s = Streams(np.arange(9), batch_size=2, seq_length=3); x, y = s.chunk(0); x.T.tolist(), y.T.tolist()
    ([[0, 1, 2], [4, 5, 6]], [[1, 2, 3], [5, 6, 7]])
    """

    def __init__(self, data, batch_size, seq_length, block=None, align=None):
        self.data = data
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.stream_len = (len(data) - 1) // batch_size
        assert self.stream_len >= 1, "too little data for this many streams"
        first, end = block or (0, batch_size)
        self.starts = np.arange(first, end, dtype=np.int64) * self.stream_len  # (b,) this process's streams
        if align is not None:  # lines mode: each stream starts where an item starts (at or before b * L)
            self.starts = np.array([align(int(s)) for s in self.starts], dtype=np.int64)
        self.steps_per_epoch = -(-self.stream_len // seq_length)

    def chunk(self, offset, length=None):
        """(x, y) int64 arrays of shape (T', b) starting `offset` characters into every stream:
        T' = `length` (default seq_length) characters, fewer where the streams end."""
        assert 0 <= offset < self.stream_len
        t = min(length or self.seq_length, self.stream_len - offset)
        if isinstance(self.data, Tokens):  # one positioned read per stream
            xy = np.stack([self.data.read(int(s) + offset, t + 1) for s in self.starts], axis=1)
        else:
            pos = self.starts[None, :] + np.arange(offset, offset + t + 1, dtype=np.int64)[:, None]
            xy = np.asarray(self.data)[pos]  # (T' + 1, b)
        xy = xy.astype(np.int64)
        return xy[:-1], xy[1:]
