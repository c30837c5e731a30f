"""The vocabulary: the sorted Unicode code points of a text, and the index <-> character maps.

The unknown symbol: characters seen fewer than data.min_count times in the training text are
folded into one symbol, U+FFFD (the Unicode replacement character, UNKNOWN), which then stands in
the vocabulary for every character it does not hold: encoding maps them to it, sampling never
draws it (it names no one character), and scoring counts it as the prediction of "a rare
character". A vocabulary without it (min_count 1, and every checkpoint from before) holds exactly
the text's characters and encodes nothing else.
"""

import numpy as np

UNKNOWN = "\ufffd"


class Vocab:
    """Characters sorted by code point; index i stands for chars[i].

    >>> v = Vocab.from_text("hello"); v.chars, v.encode("hole").tolist(), v.decode([3, 1])
    ('ehlo', [1, 3, 2, 0], 'oh')
    """

    def __init__(self, codepoints):
        cps = np.asarray(codepoints, dtype=np.int64)
        assert cps.ndim == 1 and np.all(np.diff(cps) > 0), "code points must be sorted and unique"
        self.codepoints = cps
        self.chars = "".join(map(chr, cps.tolist()))
        self._index = {c: i for i, c in enumerate(self.chars)}
        self.unk = self._index.get(UNKNOWN)  # the unknown symbol's index, or None

    @classmethod
    def from_text(cls, text):
        return cls(sorted({ord(c) for c in text}))

    def __len__(self):
        return len(self.chars)

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.chars == other.chars

    def __contains__(self, ch):
        return ch in self._index

    def index(self, ch):
        return self._index[ch]

    def covers(self, ch):
        """Whether `ch` encodes: it is in the vocabulary, or the unknown symbol stands for it."""
        return ch in self._index or self.unk is not None

    def unknown(self, text):
        """Characters of text that do not encode, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if not self.covers(c)))

    def folded(self, text):
        """Characters of text that encode as the unknown symbol, in order of first appearance."""
        return [] if self.unk is None else list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text):
        """Indices of text's characters (each must be covered: in the vocabulary, or folded).
        Vocab.from_text("ab\ufffd").encode("abz").tolist() == [0, 1, 2]"""
        if self.unk is None:
            return np.fromiter((self._index[c] for c in text), dtype=np.int64, count=len(text))
        return np.fromiter((self._index.get(c, self.unk) for c in text), dtype=np.int64, count=len(text))

    def decode(self, indices):
        return "".join(self.chars[i] for i in indices)

    def lookup_table(self, dtype, fill=0):
        """table[code point] = index, for every code point up to the largest in the vocabulary;
        code points outside it map to `fill`. Vocab.from_text("ab").lookup_table(np.int64, -1)[97:]
        -> array([0, 1])
        """
        table = np.full(int(self.codepoints[-1]) + 1, fill, dtype=dtype)
        table[self.codepoints] = np.arange(len(self))
        return table

    def encoding_table(self, dtype):
        """table[code point] = index for every code point (0x110000 entries): folded characters to the
        unknown symbol; with none, characters outside the vocabulary to 0 (the caller has checked)."""
        table = np.full(0x110000, self.unk or 0, dtype=dtype)
        table[self.codepoints] = np.arange(len(self))
        return table

    def index_dtype(self):
        """Smallest unsigned type holding every index: uint8 up to 256 characters."""
        n = len(self)
        return np.uint8 if n <= 256 else np.uint16 if n <= 65536 else np.uint32

    def preview(self, limit=60):
        """A printable preview: repr of the first `limit` characters."""
        shown = self.chars[:limit]
        return repr(shown) + (f" ... (+{len(self) - limit})" if len(self) > limit else "")
