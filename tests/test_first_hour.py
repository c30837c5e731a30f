"""The first hour of a new user: one default model, rare characters folded, lists sized to the
list, the run's text found the same way by every command, bundled configs after pip install."""

import json

import numpy as np

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.io.config import from_dict
from charrnn_cli.io.cache import prepare
from charrnn_cli.io.data import scan_vocab
from charrnn_cli.training.loop import train
from charrnn_cli.io.vocab import UNKNOWN

from conftest import make_text, write_yaml, invoke


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


# ---- lists sized to the list ----------------------------------------------------------------


def words(path, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = {"".join(rng.choice(list(letters), size=int(rng.integers(3, 9)))) for _ in range(n)}
    path.write_text("\n".join(sorted(out)) + "\n", encoding="utf-8")
    return path


def test_a_lines_run_on_a_list_gets_a_model_and_stop_rule_sized_to_it(tmp_path, monkeypatch):
    from charrnn_cli.io.targets import own_text_config, sized_for_list

    monkeypatch.chdir(tmp_path)
    words(tmp_path / "words.txt")
    cfg = own_text_config("words.txt", ["data.mode=lines"])
    assert (cfg.model.num_layers, cfg.model.hidden_size) == (1, 128) and cfg.training.patience == 8
    assert cfg.training.eval_every < 50  # validated a few times an epoch: the best point is caught
    cfg = own_text_config("words.txt", ["data.mode=lines", "model.hidden_size=64"])
    assert cfg.model.hidden_size == 64  # a --set still wins
    assert sized_for_list(5_000_000)["model"] == {} and own_text_config("words.txt").model.num_layers == 2
    r = invoke("train", "words.txt", "--lines", "--set", "training.max_minutes=0.5")
    assert r.exit_code == 0 and "stopped early" in r.output, r.output[-600:]
    assert "model: lstm 1x128" in r.output


def test_the_last_line_says_when_validation_has_been_rising(tmp_path):

    raw = {"data": {"path": str(words(tmp_path / "w.txt", n=200)), "mode": "lines", "val_fraction": 0.3},
           "model": {"hidden_size": 128, "num_layers": 1, "dropout": 0.0},
           "training": {"max_steps": 600, "eval_every": 25, "learning_rate": 0.01, "batch_size": 8,
                        "seq_length": 16, "lr_schedule": "step", "unit_split": 1, "max_minutes": None},
           "output": {"dir": str(tmp_path / "run")}}  # random words: nothing to learn but the list itself
    r = invoke("train", write_yaml(tmp_path, raw), "--quiet")
    assert r.exit_code == 0, r.output
    assert "note: validation has been rising since step" in r.output and "memorising" in r.output, r.output


# ---- the run's text, found the same way by every command -------------------------------------


def test_eval_and_sample_novel_find_the_runs_text_from_another_folder(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    words(work / "words.txt", n=600)
    r = invoke("train", "words.txt", "--lines", "--set", "training.max_steps=30", "--set", "model.hidden_size=16")
    assert r.exit_code == 0, r.output
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    r = invoke("sample", "../work/runs/words/best.npz", "--items", 5, "--novel")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 5, r.output
    r = invoke("eval", "../work/runs/words/best.npz")
    assert r.exit_code == 0 and "nats/char" in r.output, r.output
    import charrnn_cli as charrnn

    assert len(charrnn.load("../work/runs/words/best.npz").items(3, novel=True)) == 3


# ---- bundled configs ------------------------------------------------------------------------


def test_a_bundled_config_is_named_and_listed_and_a_real_file_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("train", "--list")
    assert r.exit_code == 0 and "tiny " in r.output and "shakespeare " in r.output and "names " in r.output
    r = invoke("train", "tiny", "--set", "training.max_steps=2")
    assert r.exit_code == 0 and "using the bundled config tiny" in r.output, r.output
    assert (tmp_path / "runs" / "tiny" / "best.npz").exists()
    r = invoke("train", "configs/tiny.yaml", "--set", "training.max_steps=2", "--set", "output.dir=again")
    assert r.exit_code == 0 and "using the bundled config tiny" in r.output, r.output  # no configs/ here
    make_text(tmp_path / "tiny")  # a text file named like a bundled config: the file wins
    r = invoke("train", "tiny", "--set", "training.max_steps=2", "--set", "model.hidden_size=8",
               "--set", "output.dir=mine")
    assert r.exit_code == 0 and "training on the file tiny found here" in r.output, r.output
    assert ckpt.load(str(tmp_path / "mine" / "latest.npz")).config.data.path == "tiny"
