"""The first hour of a new user: one default model, rare characters folded, lists sized to the
list, the run's text found the same way by every command, bundled configs after pip install."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn_cli import checkpoint as ckpt
from charrnn_cli.cli import main
from charrnn_cli.config import from_dict
from charrnn_cli.data import prepare, scan_vocab
from charrnn_cli.training import train
from charrnn_cli.vocab import UNKNOWN

from test_train import make_text


def invoke(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def code_like(path, n=40_000, seed=0):
    """A text like a folder of source files: ASCII, with 300 distinct rare characters seen once or twice."""
    rng = np.random.default_rng(seed)
    base = make_text(path, n=n, seed=seed).read_text(encoding="utf-8")
    rare = [chr(0x4E00 + k) for k in range(300)]  # CJK ideographs, each once, a few twice
    pieces = list(base)
    for k, ch in enumerate(rare):
        for _ in range(1 + (k % 7 == 0)):
            pieces.insert(int(rng.integers(len(pieces))), ch)
    path.write_text("".join(pieces), encoding="utf-8")
    return path


# ---- rare characters -----------------------------------------------------------------------


def test_rare_characters_fold_into_one_unknown_symbol(tmp_path):
    text = code_like(tmp_path / "code.txt")
    full, n, none = scan_vocab(str(text), min_count=1)
    vocab, n2, folded = scan_vocab(str(text), min_count=5)
    assert n == n2 and none.distinct == 0 and len(full) >= 300
    assert folded.distinct == 300 and folded.occurrences == 300 + len(range(0, 300, 7))
    assert len(vocab) == len(full) - 300 + 1 and vocab.unk is not None and vocab.chars[vocab.unk] == UNKNOWN
    corpus = prepare(str(text), str(tmp_path / "cache"), min_count=5)
    data = np.asarray(corpus.data)
    assert int((data == vocab.unk).sum()) == folded.occurrences  # every rare character is the symbol
    assert corpus.vocab == vocab


def test_the_default_run_says_what_it_folded_and_samples_never_draw_the_symbol(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code_like(tmp_path / "code.txt")
    r = invoke("train", "code.txt", "--set", "training.max_steps=30", "--set", "model.hidden_size=32",
               "--set", "model.num_layers=1", "--set", "training.unit_split=1")
    assert r.exit_code == 0, r.output
    assert "300 rare characters (seen fewer than 5 times: 343 of the text's" in r.output
    assert f"folded into the unknown symbol {UNKNOWN!r} (data.min_count)" in r.output
    ck = ckpt.load("runs/code/best.npz")
    assert ck.vocab.unk is not None and ck.config.data.min_count == 5
    s = invoke("sample", "runs/code/best.npz", "--length", 3000, "--temperature", 3.0, "--rng-seed", 1,
               "--seed", "一 the")  # a prime with a character the run folded: encoded as the symbol
    assert s.exit_code == 0 and UNKNOWN not in s.output and s.output.startswith("一 the"), s.output[:200]
    # eval of a text with characters the model never saw: scored as the unknown symbol, and said so
    (tmp_path / "new.txt").write_text("the cat ☃ sat ☃ on 🐍 mat\n", encoding="utf-8")
    e = invoke("eval", "runs/code/best.npz", "new.txt", "--json")
    d = json.loads(e.output)
    assert e.exit_code == 0 and d["unknown_chars"] == 3 and d["unknown_scored"] and d["chars"] == 24
    assert invoke("eval", "runs/code/best.npz").exit_code == 0  # the run's own split, through the symbol


def test_a_checkpoint_from_before_min_count_keeps_every_character(tmp_path):
    raw = {"data": {"path": str(make_text(tmp_path / "t.txt")), "min_count": 1},
           "model": {"hidden_size": 8, "num_layers": 1}, "training": {"max_steps": 2, "unit_split": 1},
           "output": {"dir": str(tmp_path / "run")}}
    train(from_dict(raw), quiet=True, echo=lambda m: None)
    with np.load(tmp_path / "run" / "latest.npz") as z:
        arrays = {k: z[k] for k in z.files}
    old = json.loads(str(arrays["config_json"]))
    del old["data"]["min_count"]  # as every checkpoint saved before the key existed
    arrays["config_json"] = np.array(json.dumps(old))
    np.savez(tmp_path / "old.npz", **arrays)
    ck = ckpt.load(str(tmp_path / "old.npz"))
    assert ck.config.data.min_count == 1 and ck.vocab.unk is None
    r = invoke("eval", tmp_path / "old.npz")
    assert r.exit_code == 0, r.output


def test_the_newline_is_never_folded(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("abcabcabcabcabc\n", encoding="utf-8")  # one newline: rarer than min_count
    vocab, _, folded = scan_vocab(str(f), min_count=5)
    assert "\n" in vocab and folded.distinct == 0
