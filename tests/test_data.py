"""Text preparation and streaming: UTF-8, vocabulary, cache reuse, chunk coverage."""

import os

import numpy as np
import pytest

from charrnn_cli.io import data as data_mod
from charrnn_cli.io.cache import prepare
from charrnn_cli.io.data import DataError, Streams, scan_vocab
from charrnn_cli.io.vocab import Vocab


def test_vocab_is_sorted_code_points_and_encodes_unicode(tmp_path):
    text = "héllo wörld ☃ 😀\nhé"
    p = tmp_path / "u.txt"
    p.write_text(text, encoding="utf-8")
    corpus = prepare(str(p), str(tmp_path / "cache"))
    assert corpus.vocab.chars == "".join(sorted(set(text)))
    assert corpus.vocab.decode(corpus.data) == text
    assert corpus.data.dtype == np.uint8 and isinstance(corpus.data, data_mod.Tokens)
    assert np.load(corpus.cache_path).tolist() == corpus.vocab.encode(text).tolist()  # a plain .npy


def test_wide_vocabulary_uses_wider_ints(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(300))
    p = tmp_path / "cjk.txt"
    p.write_text(text, encoding="utf-8")
    corpus = prepare(str(p), str(tmp_path / "c"))
    assert corpus.data.dtype == np.uint16 and len(corpus.vocab) == 300
    assert corpus.vocab.decode(corpus.data) == text


def test_chunked_reading_matches_whole_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "CHUNK_BYTES", 7)  # splits multi-byte characters across reads
    text = ("ab€cd😀é\n" * 50) + "xyz"
    p = tmp_path / "t.txt"
    p.write_text(text, encoding="utf-8")
    corpus = prepare(str(p), str(tmp_path / "c"))
    assert corpus.vocab.decode(corpus.data) == text
    vocab, n, _ = scan_vocab(str(p))
    assert n == len(text) and vocab == Vocab.from_text(text)


@pytest.mark.parametrize("chunk", [3, 1 << 20])
def test_invalid_utf8_names_the_byte_offset(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(data_mod, "CHUNK_BYTES", chunk)
    p = tmp_path / "bad.txt"
    p.write_bytes("héllo".encode() + b"\xff" + b"rest")
    with pytest.raises(DataError, match=r"not valid UTF-8: bad byte at offset 6 .a text in another encoding converts with iconv"):
        prepare(str(p), str(tmp_path / "c"))
    p.write_bytes(b"abc\xe2\x82")  # truncated at the end
    with pytest.raises(DataError, match=r"offset 3"):
        prepare(str(p), str(tmp_path / "c"))


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        prepare(str(tmp_path / "none.txt"), str(tmp_path))
    with pytest.raises(DataError, match="directory"):
        prepare(str(tmp_path), str(tmp_path))
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        prepare(str(tmp_path / "e.txt"), str(tmp_path))


def test_cache_is_reused_until_the_file_changes(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("abcabc")
    c1 = prepare(str(p), str(tmp_path / "c"))
    assert not c1.reused
    c2 = prepare(str(p), str(tmp_path / "c"))
    assert c2.reused and c2.vocab.chars == "abc"
    p.write_text("xyzzy!")
    os.utime(p, ns=(1, 1))  # a different mtime even on coarse clocks
    c3 = prepare(str(p), str(tmp_path / "c"))
    assert not c3.reused and c3.vocab.chars == "!xyz" and c3.vocab.decode(c3.data) == "xyzzy!"


def test_split_is_contiguous():
    corpus = data_mod.Corpus(np.arange(100), Vocab(range(100)), "", False)
    train, val = corpus.split(0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_tokens_reads_and_slices(tmp_path):
    arr = (np.arange(1000) % 251).astype(np.uint8)
    np.save(tmp_path / "a.npy", arr)
    tok = data_mod.Tokens.open_npy(str(tmp_path / "a.npy"))
    assert len(tok) == 1000 and tok.read(10, 5).tolist() == arr[10:15].tolist()
    part = tok[100:900]
    assert len(part) == 800 and np.asarray(part).tolist() == arr[100:900].tolist()
    s_tok, s_arr = Streams(part, 4, 9), Streams(arr[100:900], 4, 9)
    for off in (0, 9, 198):
        for a, b in zip(s_tok.chunk(off), s_arr.chunk(off)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n,B,T", [(101, 4, 5), (1000, 7, 13), (50, 1, 49), (64, 8, 3)])
def test_an_epoch_covers_every_input_once_with_shifted_targets(n, B, T):
    data = np.arange(n)
    s = Streams(data, B, T)
    seen = []
    offset = 0
    prev_last = None
    for _ in range(s.steps_per_epoch):
        x, y = s.chunk(offset)
        assert x.shape[1] == B and 1 <= x.shape[0] <= T
        np.testing.assert_array_equal(y, x + 1)  # targets are the inputs shifted by one
        if offset:  # each stream continues where it stopped: the state may be carried
            np.testing.assert_array_equal(x[0], prev_last + 1)
        prev_last = x[-1]
        seen.append(x.ravel())
        offset += x.shape[0]
    assert offset == s.stream_len
    seen = np.sort(np.concatenate(seen))
    assert len(seen) == len(np.unique(seen)) == B * ((n - 1) // B)  # each input exactly once
    assert seen[0] == 0 and seen[-1] < n - 1
