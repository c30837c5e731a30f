"""charrnn viz: the per-character figures against eval and the model's softmax, the unit finder on
a planted unit, the text features worked by hand, and the page in a real headless browser."""

import json
import math
import os
import shutil
import subprocess

import numpy as np
import pytest

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.io.config import from_dict
from charrnn_cli.training.loop import train
from charrnn_cli.tools.viz import analyze, features, find_units

from conftest import make_config, write_yaml, names_config, invoke


BROWSER = next((b for b in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viz")
    raw = make_config(tmp, max_steps=40, eval_every=20)
    train(from_dict(raw), quiet=True)
    return tmp / "run" / "best.npz", tmp / "text.txt"


def test_json_nats_average_to_evals_figure(trained, tmp_path):
    ck_path, text_path = trained
    text = text_path.read_text(encoding="utf-8")[:700]
    piece = tmp_path / "piece.txt"
    piece.write_text(text, encoding="utf-8")
    r = invoke("viz", ck_path, piece, "--json", "--max-chars", 5000)
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in r.output.splitlines()]
    assert "".join(x["char"] for x in recs) == text and recs[0]["nats"] is None
    ours = np.mean([x["nats"] for x in recs[1:]])
    ev = json.loads(invoke("eval", ck_path, piece, "--json").output)
    assert ev["chars"] == len(recs) - 1
    assert ours == pytest.approx(ev["nats_per_char"], rel=1e-6)


def test_top_predictions_are_the_models_softmax(trained, tmp_path):
    ck_path, text_path = trained
    text = text_path.read_text(encoding="utf-8")[:300]
    piece = tmp_path / "piece.txt"
    piece.write_text(text, encoding="utf-8")
    recs = [json.loads(line) for line in invoke("viz", ck_path, piece, "--json").output.splitlines()]
    ck = ckpt.load(str(ck_path))
    model = ck.build_model(dtype=np.float64)  # an independent computation: float64, one chunk
    idx = ck.vocab.encode(text)
    _, _, cache = model.forward(idx[:-1, None], idx[1:, None], model.zero_state(1))
    z = cache["logits"] - cache["logits"].max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    for t in range(1, len(text)):
        row = p[t - 1]
        for c, q in recs[t]["top"]:
            assert q == pytest.approx(row[ck.vocab.index(c)], abs=1e-5)
        qs = [q for _, q in recs[t]["top"]]
        assert qs == sorted(qs, reverse=True) and len(qs) == 5
        assert qs[-1] >= np.sort(row)[-5] - 1e-5  # nothing left out is more likely
        assert recs[t]["p"] == pytest.approx(row[ck.vocab.index(text[t])], abs=1e-5)
        assert recs[t]["nats"] == pytest.approx(-math.log(recs[t]["p"]), rel=1e-5)


def test_features_by_hand():
    f = features('ab (c"d")\nXY [z]')
    assert f["position in the line"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5]
    assert f["parenthesis depth ( )"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert f["inside double quotes"].tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert f["bracket depth [ ] { }"].tolist() == [0] * 13 + [1, 1, 0]
    assert f["inside an upper-case word"].tolist() == [0] * 10 + [1, 1] + [0] * 4
    assert f["start of a line"].tolist() == [1] + [0] * 9 + [1] + [0] * 5
    assert f["inside a word"].tolist() == [1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0]


def test_find_units_finds_a_planted_unit():
    text = "the cat sat\non the mat\nand the dog ran far away\n" * 5
    rng = np.random.default_rng(0)
    h = rng.normal(size=(len(text) - 1, 16)).astype(np.float32)
    depth = features(text[:-1])["position in the line"]
    h[:, 11] = np.tanh(depth / 10)  # a unit that counts the position in the line
    found = find_units({(0, "h"): h}, text)
    r_abs, r, feature, layer, name, unit = found[0]
    assert (feature, layer, name, unit) == ("position in the line", 0, "h", 11) and r > 0.9


def test_analyze_keeps_the_state_of_every_layer(trained):
    ck = ckpt.load(str(trained[0]))
    res = analyze(ck.build_model(), ck.vocab, "the cat sat on the mat\n" * 30)
    assert set(res["acts"]) == {(0, "h"), (0, "c"), (1, "h"), (1, "c")}  # LSTM 2x12
    assert res["acts"][(1, "h")].shape == (len(res["chars"]) - 1, 12)


def test_bad_input_is_one_line(trained, tmp_path):
    ck_path, text_path = trained
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ab\xffcd")
    alien = tmp_path / "alien.txt"
    alien.write_text("ЖЖЖ 漢字", encoding="utf-8")  # no character the vocabulary knows but the space
    (tmp_path / "afile").write_text("x")
    for args, msg in (([ck_path, tmp_path / "none.txt"], "file not found"), ([ck_path, bad], "not valid UTF-8"),
                      ([tmp_path / "none.npz", bad], "checkpoint not found"),
                      ([ck_path, alien], "nothing to show"),
                      ([ck_path, text_path, "-o", tmp_path / "afile" / "page.html"], "cannot write")):
        r = invoke("viz", *args)
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output, r.output
        assert r.output.strip().count("\n") <= 1, r.output  # one line (and a warning for dropped characters)
    assert sorted(os.listdir(tmp_path)) == ["afile", "alien.txt", "bad.txt"]  # nothing half-written


def _dom(url):
    """The page's DOM after its script has run, as headless Chromium renders it."""
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout


@pytest.mark.skipif(BROWSER is None, reason="needs headless Chromium: apt-get install chromium-headless-shell")
def test_the_page_renders_in_a_headless_browser(trained, tmp_path):
    ck_path, text_path = trained
    out = tmp_path / "page.html"
    r = invoke("viz", ck_path, text_path, "-o", out, "--max-chars", 600)
    assert r.exit_code == 0, r.output
    page = out.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "src=" not in page  # nothing fetched
    dom = _dom(out.as_uri())
    assert 'data-ready="1"' in dom and "data-errors" not in dom, dom[-2000:]  # the script ran, no errors
    surprise = dom.split('id="surprise"')[1].split("</div>")[0]
    assert surprise.count("<span") == 600  # every character drawn, shaded by its surprisal
    assert surprise.count("background: rgb(") == 599  # all but the first, which is not predicted
    text = text_path.read_text(encoding="utf-8")[:600]
    (tmp_path / "shown.txt").write_text(text, encoding="utf-8")
    ev = json.loads(invoke("eval", ck_path, tmp_path / "shown.txt", "--json").output)
    assert f"{ev['nats_per_char']:.4f} nats/char" in dom  # the header equals eval on the shown text
    units = dom.split('id="units"')[1].split("</ol>")[0]
    assert units.count("<li") >= 5 and "r = " in units
    recs = [json.loads(line) for line in invoke("viz", ck_path, text_path, "--json", "--max-chars", 600).output.splitlines()]
    hovered = _dom(out.as_uri() + "#t=123")
    tip = hovered.split('id="tip"')[1].split("</div>")[0]
    assert "top 5 before it" in tip and f"p = {100 * recs[123]['p']:.2f}%" in tip, tip
    unitview = dom.split('id="unitview"')[1].split("</div>")[0]
    assert unitview.count("background: rgb(") == 600  # a unit on a diverging scale, the last character grey
    assert unitview.count("rgb(238, 238, 238)") == 1
    other = _dom(out.as_uri() + "#unit=1,h,5")  # choosing another unit re-shades the text
    assert 'data-ready="1"' in other and "data-errors" not in other
    assert 'id="scale">' in other
    reshaded = other.split('id="unitview"')[1].split("</div>")[0]
    assert reshaded.count("background: rgb(") == 600 and reshaded != unitview


@pytest.mark.skipif(BROWSER is None, reason="needs headless Chromium: apt-get install chromium-headless-shell")
@pytest.mark.parametrize("budget,bits", [(10 ** 9, 8), (600, 4), (200, 2)])
def test_the_page_decodes_its_activation_codes(trained, tmp_path, monkeypatch, budget, bits):
    """Activations packed 8, 4 or 2 bits to a value come back, in the browser, as the colours of
    their quantized values: a unit ramping from -1 to +1 over the text."""
    from charrnn_cli.tools import viz

    monkeypatch.setattr(viz, "BUDGET_BYTES", budget)
    ck = ckpt.load(str(trained[0]))
    res = analyze(ck.build_model(), ck.vocab, "the cat sat on the mat\n" * 12)
    n = len(res["chars"]) - 1
    ramp = np.linspace(-1, 1, n)
    res["acts"] = {(0, "h"): np.stack([np.zeros(n), ramp, ramp ** 3], axis=1).astype(np.float32)}
    data = viz.page_data(res, ck.vocab, [], "test")
    assert data["act_bits"] == bits
    out = tmp_path / "p.html"
    out.write_text(viz.page(data), encoding="utf-8")
    dom = _dom(out.as_uri() + "#unit=0,h,1")
    assert 'data-ready="1"' in dom and "data-errors" not in dom
    spans = dom.split('id="unitview"')[1].split("</div>")[0].split("<span")[1:]
    k = 2 ** (bits - 1) - 1

    def colour(v):  # the page's diverging scale, JavaScript's rounding
        w, c = min(abs(v), 1), ((33, 102, 172) if v < 0 else (178, 24, 43))
        return "rgb(" + ", ".join(str(int(np.floor(255 + (x - 255) * w + 0.5))) for x in c) + ")"

    for t in range(n):
        expected = colour(round(ramp[t] * k) / k)
        assert f"background: {expected};" in spans[t], (t, ramp[t], spans[t][:80])


def test_a_lines_model_is_read_as_items_as_eval_reads_it(tmp_path):

    raw = names_config(tmp_path, max_steps=30)
    assert invoke("train", write_yaml(tmp_path, raw), "--quiet").exit_code == 0
    best, names = tmp_path / "run" / "best.npz", raw["data"]["path"]
    recs = [json.loads(line) for line in invoke("viz", best, names, "--json", "--max-chars", 10 ** 6).output.splitlines()]
    ev = json.loads(invoke("eval", best, names, "--json").output)
    assert recs[0]["char"] == "\n" and ev["chars"] == len(recs) - 1
    assert np.mean([x["nats"] for x in recs[1:]]) == pytest.approx(ev["nats_per_char"], rel=1e-6)


def test_viz_refuses_a_pipe_a_missing_folder_and_a_page_too_big(trained, tmp_path):
    ck_path, text_path = trained
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = invoke("viz", ck_path, fifo, "-o", tmp_path / "v.html")
    assert r.exit_code == 1 and "not a regular file" in r.output, r.output
    r = invoke("viz", ck_path, text_path, "-o", tmp_path / "no" / "such" / "v.html")
    assert r.exit_code == 1 and "does not exist" in r.output and not (tmp_path / "no").exists(), r.output
    r = invoke("viz", ck_path, text_path, "-o", tmp_path / "v.html", "--max-chars", 1_000_000)
    assert r.exit_code == 2 and "--max-chars" in r.output and not (tmp_path / "v.html").exists(), r.output


@pytest.mark.skipif(BROWSER is None, reason="needs headless Chromium: apt-get install chromium-headless-shell")
def test_a_file_name_that_looks_like_markup_is_shown_as_text(trained, tmp_path):
    ck_path, text_path = trained
    odd = tmp_path / "<!--<script>&amp;<!--x.txt"
    odd.write_text(text_path.read_text(encoding="utf-8")[:300], encoding="utf-8")
    out = tmp_path / "page.html"
    r = invoke("viz", ck_path, odd, "-o", out)
    assert r.exit_code == 0, r.output
    dom = _dom(out.as_uri())
    assert 'data-ready="1"' in dom and "data-errors" not in dom, dom[-2000:]
    header = dom.split('id="header"')[1].split("</div>")[0]
    assert "&lt;!--&lt;script&gt;&amp;amp;&lt;!--x.txt" in header, header  # the name, as text
    assert dom.split('id="surprise"')[1].split("</div>")[0].count("<span") == 300
