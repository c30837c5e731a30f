"""Looking inside a model: what it predicts at each character and what its units track.

analyze() runs the model over a text as `charrnn eval` does (one stream, zero initial state,
carried through, every character after the first predicted) and keeps, per character, the nats
the model paid for it, its top predictions and the activations of every unit (h of every layer,
and c for the LSTM). find_units() ranks units by how well they track simple properties of the
text (Karpathy, Johnson and Fei-Fei, "Visualizing and Understanding Recurrent Networks", 2015):
position in the line, inside quotes, bracket and parenthesis depth, inside a word, an upper-case
word, the start of a line. page() writes it all as one self-contained HTML file; records() as
JSON lines for scripts.

The page stores activations as 8-, 4- or 2-bit codes (255, 15 or 3 levels of the unit's largest
magnitude, which is kept), whichever is the finest that keeps them within 3 MB, base64-encoded:
2,000 characters of a 2x384 LSTM (h and c of both layers, 1,536 units) at 4 bits make a page of
about 2.2 MB, 10,000 characters at 2 bits about 5 MB.
"""

import base64
import html
import json
import math

import numpy as np

from ..io.data import as_items_text

TOP = 5  # predictions kept per character
CHUNK = 256  # characters per forward pass (as score_file)


def analyze(model, vocab, text, lines=False):
    """Per-character predictions and activations of `model` over `text` (characters outside the
    vocabulary are left out, as eval does). lines: a model trained in lines mode reads the text as
    eval does then, as items (data.as_lines), its state reset where each starts. Returns a dict:

        chars    the text scored (a str)
        nats     (N,) float64, nats[t] = -ln p(chars[t] | chars[:t]); nats[0] = nan (not predicted)
        top      (N, TOP) int, top[t] = the most likely characters before chars[t] (row 0 unused)
        top_p    (N, TOP) float, their probabilities; p (N,) the probability of chars[t]
        acts     {(layer, name): (N, H) float32}, name "h" or "c"
    """
    kept = "".join(c for c in text if vocab.covers(c))
    if lines:
        kept = as_items_text(kept)
    nl = vocab.index("\n") if lines else None
    idx = vocab.encode(kept)
    N = len(idx)
    nats = np.full(N, np.nan)
    top = np.zeros((N, TOP), dtype=np.int64)
    top_p = np.zeros((N, TOP))
    p_true = np.full(N, np.nan)
    acts = {}
    state = model.zero_state(1)
    k = min(TOP, len(vocab))
    for start in range(0, max(N - 1, 0), CHUNK):
        piece = idx[start : start + CHUNK + 1]
        x, y = piece[:-1, None], piece[1:, None]  # (T, 1)
        _, state, cache = model.forward(x, y, state, resets=None if nl is None else x == nl)
        probs = cache["probs"].astype(np.float64)  # (T, V): the prediction of each next character
        T = len(y)
        rows = np.arange(T)
        at = slice(start + 1, start + 1 + T)
        p_true[at] = probs[rows, y[:, 0]]
        nats[at] = -np.log(p_true[at])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        top[at, :k] = order
        top_p[at, :k] = np.take_along_axis(probs, order, axis=1)
        for layer, states in enumerate(model.activations(cache)):
            for name, a in states.items():  # (H, T, 1): the state after reading x_t
                acts.setdefault((layer, name), []).append(a[:, :, 0].T.copy())
    acts = {key: np.concatenate(v) for key, v in acts.items()}  # (N - 1, H): after chars[0 .. N-2]
    return {"chars": kept, "nats": nats, "top": top, "top_p": top_p, "p": p_true, "acts": acts,
            "dropped": sum(not vocab.covers(c) for c in text)}


def features(text):
    """{name: (N,) float} simple properties of each character's position, read from the text."""
    n = len(text)
    f = {name: np.zeros(n) for name in ("position in the line", "inside double quotes", "bracket depth [ ] { }",
                                        "parenthesis depth ( )", "inside a word", "inside an upper-case word",
                                        "start of a line")}
    col, quote, brackets, parens = 0, 0, 0, 0
    for t, c in enumerate(text):
        f["position in the line"][t] = col  # a newline ends its line: it has the line's last position
        col = 0 if c == "\n" else col + 1
        if c == '"':
            quote ^= 1
        f["inside double quotes"][t] = quote
        brackets = max(brackets + (c in "[{") - (c in "]}"), 0)
        parens = max(parens + (c == "(") - (c == ")"), 0)
        f["bracket depth [ ] { }"][t] = brackets
        f["parenthesis depth ( )"][t] = parens
        f["inside a word"][t] = c.isalpha()
        f["start of a line"][t] = t == 0 or text[t - 1] == "\n"
    word_start = 0
    for t, c in enumerate(text + " "):  # upper-case words: every letter of the word is a capital
        if not c.isalpha():
            word = text[word_start:t]
            if len(word) > 1 and word.isupper():
                f["inside an upper-case word"][word_start:t] = 1
            word_start = t + 1
    return f


def find_units(acts, text, limit=20):
    """Units whose activation best tracks a feature of the text: [(|r|, r, feature, layer, name, unit)],
    best first, each unit once. The activation after reading chars[t] is matched with chars[t]'s feature."""
    feats = features(text[:-1])  # acts[t] is the state after reading text[t], t < N - 1
    found = []
    for (layer, name), a in acts.items():
        z = a - a.mean(axis=0)
        zn = np.sqrt((z * z).sum(axis=0))  # (H,)
        for fname, fv in feats.items():
            fz = fv - fv.mean()
            fn = math.sqrt(float(fz @ fz))
            if fn == 0:
                continue  # the text never varies in this property
            with np.errstate(invalid="ignore", divide="ignore"):
                r = (fz @ z) / (zn * fn)
            r = np.nan_to_num(r)
            for unit in np.argsort(-np.abs(r))[:limit]:
                found.append((abs(float(r[unit])), float(r[unit]), fname, layer, name, int(unit)))
    found.sort(key=lambda row: -row[0])
    seen, best = set(), []
    for row in found:
        if (row[3], row[4], row[5]) not in seen:
            seen.add((row[3], row[4], row[5]))
            best.append(row)
        if len(best) == limit:
            break
    return best


def records(result, vocab):
    """One dict per character, for --json: the character, its nats, the model's top predictions."""
    out = []
    for t, c in enumerate(result["chars"]):
        rec = {"i": t, "char": c, "nats": None, "p": None, "top": []}
        if t > 0:
            rec["nats"] = float(result["nats"][t])
            rec["p"] = float(result["p"][t])
            rec["top"] = [[vocab.chars[j], float(p)] for j, p in zip(result["top"][t], result["top_p"][t]) if p > 0]
        out.append(rec)
    return out


def mean_nats(result):
    """nats/char over every predicted character: the figure `charrnn eval` gives on the same text."""
    n = result["nats"][1:]
    return float(n.mean()) if len(n) else math.nan


BUDGET_BYTES = 3_000_000  # activations stored in a page, before base64 (which adds a third)


def bits_for(values, budget=None):
    """Bits per stored activation: 8, 4 or 2, the most that keep `values` of them within budget.
    bits_for(2000 * 1536) == 4; bits_for(10_000 * 1536) == 2"""
    budget = BUDGET_BYTES if budget is None else budget
    for bits in (8, 4):
        if values * bits <= budget * 8:
            return bits
    return 2


def _quantized(acts):
    """Activations as `bits`-bit codes (8, 4 or 2: see bits_for), 8 // bits characters a byte, unit
    after unit, each unit scaled by its largest magnitude: code = round(k a / scale) + k + 1 with
    k = 2 ** (bits - 1) - 1 (so 0 is never used). Returns (base64, bits, scales, layout)."""
    keys = sorted(acts, key=lambda k: (k[0], k[1] != "h"))  # per layer: h, then c
    values = sum(a.size for a in acts.values())
    bits = bits_for(values)
    k = 2 ** (bits - 1) - 1  # levels each side of zero: 127, 7 or 1
    blocks, scales, layout = [], [], []
    for key in keys:
        a = acts[key].T  # (H, N - 1)
        s = np.abs(a).max(axis=1)
        s[s == 0] = 1.0
        blocks.append((np.round(a / s[:, None] * k) + k + 1).astype(np.uint8))
        scales += [round(float(v), 4) for v in s]
        layout.append({"layer": key[0], "name": key[1], "units": int(a.shape[0])})
    if not blocks:
        return "", bits, scales, layout
    q = np.concatenate(blocks)  # (units, N - 1)
    per = 8 // bits  # codes a byte
    pad = (-q.shape[1]) % per
    if pad:
        q = np.concatenate([q, np.full((q.shape[0], pad), k + 1, np.uint8)], axis=1)
    packed = np.zeros((q.shape[0], q.shape[1] // per), np.uint8)
    for j in range(per):  # the first character in the highest bits
        packed |= q[:, j::per] << (bits * (per - 1 - j))
    return base64.b64encode(np.ascontiguousarray(packed).tobytes()).decode("ascii"), bits, scales, layout


def page_data(result, vocab, units, title):
    q, bits, scales, layout = _quantized(result["acts"])
    nats = result["nats"]
    return {
        "title": title,
        "chars": result["chars"],
        "bits": [None] + [round(float(v) / math.log(2), 3) for v in nats[1:]],
        "p": [None] + [round(float(v), 4) for v in result["p"][1:]],
        "top": [[]] + [[[vocab.chars[j], round(float(p), 4)] for j, p in zip(tj, tp) if p > 0]
                       for tj, tp in zip(result["top"][1:].tolist(), result["top_p"][1:].tolist())],
        "nats_per_char": mean_nats(result),
        "acts": q, "act_bits": bits, "scales": scales, "layout": layout,
        "units": [{"r": round(r, 3), "feature": f, "layer": layer, "name": name, "unit": unit}
                  for _, r, f, layer, name, unit in units],
    }


def page(data):
    """The self-contained HTML page: CSS, JavaScript and data inline, nothing fetched."""
    # Inside <script> the HTML parser reads "</script" and "<!--" as markup even in a JSON string
    # (a file named "<!--<script>.txt" once blanked the page): JSON spells <, > and & as escapes.
    payload = json.dumps(data, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _PAGE.replace("__TITLE__", html.escape(data["title"], quote=True)).replace("__DATA__", payload)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>charrnn viz: __TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.2em auto;max-width:70em;padding:0 1em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} .meta{color:#555;margin-bottom:.8em}
.text{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;line-height:1.55;
  border:1px solid #ddd;padding:.6em;border-radius:4px;max-height:32em;overflow:auto}
.text span{cursor:default} .text span.sel{outline:1px solid #000}
.legend{display:flex;align-items:center;gap:.5em;margin:.4em 0;font-size:.9em}
.bar{height:.8em;width:14em;border:1px solid #ccc}
#tip{position:fixed;background:#fff;border:1px solid #888;padding:.4em .6em;font-size:.85em;pointer-events:none;
  display:none;box-shadow:0 2px 6px rgba(0,0,0,.2);font-family:ui-monospace,monospace;white-space:pre}
.controls{margin:.5em 0;display:flex;gap:.8em;flex-wrap:wrap;align-items:center}
#units li{cursor:pointer;margin:.15em 0} #units li:hover{text-decoration:underline}
section{margin-bottom:1.4em}
</style></head><body>
<h1>charrnn viz</h1>
<div class="meta" id="header"></div>
<section><h2>Surprise</h2>
<div class="legend">0 bits <div class="bar" style="background:linear-gradient(to right,#fff,#f4a582,#b2182b)"></div>
<span id="maxbits"></span> &nbsp; (hover or tap a character: the model's top predictions before it)</div>
<div class="text" id="surprise"></div></section>
<section><h2>Units</h2>
<div class="controls"><label>layer <select id="layer"></select></label><label>state <select id="kind"></select></label>
<label>unit <input id="unit" type="number" min="0" value="0" style="width:5em"></label>
<span class="legend">-1 <span class="bar" style="display:inline-block;background:linear-gradient(to right,#2166ac,#fff,#b2182b)"></span> +1 (of the unit's largest |activation|, <span id="scale"></span>)</span></div>
<div class="text" id="unitview"></div>
<h3>Units worth a look</h3><p class="meta">Units whose activation best tracks a property of the text
(Pearson correlation over these characters). Click one to show it above.</p><ol id="units"></ol></section>
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
window.addEventListener("error", e => { document.body.dataset.errors = (document.body.dataset.errors || "") + e.message + ";"; });
const D = JSON.parse(document.getElementById("data").textContent);
const raw = atob(D.acts);
const N = D.chars.length, B = D.act_bits, PER = 8 / B, K = 2 ** (B - 1) - 1;  // codes a byte, levels a side
const W = Math.ceil((N - 1) / PER);  // bytes per unit
function act(unitRow, t) {  // the unit's activation after reading char t, in -1..1 of its scale
  const byte = raw.charCodeAt(unitRow * W + Math.floor(t / PER));
  const code = (byte >> (B * (PER - 1 - t % PER))) & (2 ** B - 1);
  return (code - K - 1) / K;
}
const esc = c => c === "\\n" ? "\\u21b5\\n" : c;
const show = c => c === "\\n" ? "\\\\n" : c === " " ? "\\u2423" : c;
document.getElementById("header").textContent =
  `${D.title} \\u2014 ${N.toLocaleString()} characters, ` +
  `${D.nats_per_char.toFixed(4)} nats/char (${(D.nats_per_char / Math.LN2).toFixed(4)} bits/char)`;
function spans(el) {
  const frag = document.createDocumentFragment(), out = [];
  for (let t = 0; t < N; t++) { const s = document.createElement("span"); s.textContent = esc(D.chars[t]);
    s.dataset.t = t; frag.appendChild(s); out.push(s); }
  el.appendChild(frag); return out;
}
const sur = spans(document.getElementById("surprise")), uv = spans(document.getElementById("unitview"));
const maxBits = 8;
document.getElementById("maxbits").textContent = maxBits + "+ bits";
function heat(v) { // 0..1 white -> salmon -> red
  const a = [255,255,255], b = [244,165,130], c = [178,24,43];
  const [p, q, w] = v < .5 ? [a, b, v * 2] : [b, c, (v - .5) * 2];
  return `rgb(${p.map((x, i) => Math.round(x + (q[i] - x) * w)).join(",")})`;
}
function diverging(v) { // -1..1 blue -> white -> red
  const w = Math.min(Math.abs(v), 1), c = v < 0 ? [33,102,172] : [178,24,43];
  return `rgb(${c.map(x => Math.round(255 + (x - 255) * w)).join(",")})`;
}
for (let t = 1; t < N; t++) sur[t].style.background = heat(Math.min(D.bits[t] / maxBits, 1));
const tip = document.getElementById("tip");
function tipFor(t) {
  if (t === 0) return "the first character: not predicted";
  const lines = D.top[t].map(([c, p]) => `${show(c).padEnd(3)} ${(100 * p).toFixed(1).padStart(5)}%`);
  return `next: ${show(D.chars[t])}  p = ${(100 * D.p[t]).toFixed(2)}%  (${D.bits[t].toFixed(2)} bits)\\n` +
         `top ${D.top[t].length} before it:\\n` + lines.join("\\n");
}
const sv = document.getElementById("surprise");
function hover(e) { const t = e.target.dataset.t; if (t === undefined) return;
  tip.textContent = tipFor(+t); tip.style.display = "block";
  tip.style.left = Math.min(e.clientX + 12, innerWidth - 260) + "px"; tip.style.top = (e.clientY + 14) + "px"; }
sv.addEventListener("mouseover", hover); sv.addEventListener("click", hover);
sv.addEventListener("mouseleave", () => { tip.style.display = "none"; });
const layerSel = document.getElementById("layer"), kindSel = document.getElementById("kind"),
      unitIn = document.getElementById("unit");
const layers = [...new Set(D.layout.map(b => b.layer))];
layers.forEach(l => layerSel.add(new Option(l, l)));
function kinds() { kindSel.innerHTML = "";
  D.layout.filter(b => b.layer === +layerSel.value).forEach(b => kindSel.add(new Option(b.name, b.name))); }
function block() { let row = 0;
  for (const b of D.layout) { if (b.layer === +layerSel.value && b.name === kindSel.value) return [b, row]; row += b.units; }
  return [null, 0]; }
function drawUnit() {
  const [b, row] = block(); if (!b) return;
  const u = Math.max(0, Math.min(b.units - 1, +unitIn.value || 0)); unitIn.max = b.units - 1; unitIn.value = u;
  document.getElementById("scale").textContent = D.scales[row + u].toFixed(3);
  for (let t = 0; t < N - 1; t++) uv[t].style.background = diverging(act(row + u, t));  // after reading char t
  uv[N - 1].style.background = "#eee";
}
layerSel.onchange = () => { kinds(); drawUnit(); }; kindSel.onchange = drawUnit; unitIn.oninput = drawUnit;
kinds();
if (D.units.length) { const u = D.units[0]; layerSel.value = u.layer; kinds(); kindSel.value = u.name; unitIn.value = u.unit; }
drawUnit();
const ul = document.getElementById("units");
D.units.forEach(u => { const li = document.createElement("li");
  li.textContent = `layer ${u.layer} ${u.name}[${u.unit}]: ${u.feature}, r = ${u.r.toFixed(2)}`;
  li.onclick = () => { layerSel.value = u.layer; kinds(); kindSel.value = u.name; unitIn.value = u.unit; drawUnit();
    document.getElementById("unitview").scrollIntoView({block: "nearest"}); };
  ul.appendChild(li); });
const pick = /^#unit=(\\d+),(h|c),(\\d+)$/.exec(location.hash);  // page.html#unit=1,c,325 opens on that unit
if (pick) { layerSel.value = pick[1]; kinds(); kindSel.value = pick[2]; unitIn.value = pick[3]; drawUnit(); }
const m = /^#t=(\\d+)$/.exec(location.hash);  // page.html#t=123 opens on character 123, its predictions shown
if (m && +m[1] < N) { const s = sur[+m[1]], r = s.getBoundingClientRect(); s.scrollIntoView({block: "center"});
  s.classList.add("sel"); hover({target: s, clientX: r.left, clientY: r.bottom}); }
document.body.dataset.ready = "1";
</script></body></html>
"""
