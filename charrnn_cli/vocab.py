"""The vocabulary: the sorted Unicode code points of a text, and the index <-> character maps."""

import numpy as np


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

    def unknown(self, text):
        """Characters of text not in the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text):
        """Indices of text's characters (every character must be in the vocabulary)."""
        return np.fromiter((self._index[c] for c in text), dtype=np.int64, count=len(text))

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

    def index_dtype(self):
        """Smallest unsigned type holding every index: uint8 up to 256 characters."""
        n = len(self)
        return np.uint8 if n <= 256 else np.uint16 if n <= 65536 else np.uint32

    def preview(self, limit=60):
        """A printable preview: repr of the first `limit` characters."""
        shown = self.chars[:limit]
        return repr(shown) + (f" ... (+{len(self) - limit})" if len(self) > limit else "")
