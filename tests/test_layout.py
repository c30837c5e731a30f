"""The package's layout holds: layers import only downwards, no import cycle, no module over about
400 lines. The layers, bottom to top: parallel (processes), nn (the math), io (files), training,
tools, and the command line and API on top."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "charrnn_cli")
LAYERS = ["parallel", "nn", "io", "training", "tools", "cli", ""]  # "": the package's own modules (api, __init__)


def modules():
    """{dotted name: path} of every module of the package."""
    out = {}
    for path in glob.glob(os.path.join(PKG, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def imports(name, path):
    """The package modules `name` imports, at the top or inside functions."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    pkg = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg.split(".")
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(target + "." + alias.name)
            found.add(target)
    return found


def layer(name):
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else len(LAYERS) - 1


def test_layers_import_only_downwards_and_nothing_in_a_cycle():
    mods = modules()
    graph = {n: {m for m in imports(n, p) if m in mods and m != n} for n, p in mods.items()}
    for n, targets in graph.items():
        for m in targets:
            if m == "charrnn_cli" or (m.count(".") == 1 and m.split(".")[1] in LAYERS):
                continue  # the package's __init__ (its __version__) and a subpackage's (a docstring)
            assert layer(m) <= layer(n), f"{n} (layer {LAYERS[layer(n)] or 'top'}) imports {m}, a layer above"
    state = {}

    def visit(n, path):
        state[n] = "open"
        for m in graph[n]:
            assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
            if m not in state:
                visit(m, path + [m])
        state[n] = "done"

    for n in graph:
        if n not in state:
            visit(n, [n])


def test_no_module_is_over_about_400_lines():
    for name, path in modules().items():
        with open(path, encoding="utf-8") as fh:
            assert len(fh.readlines()) <= 450, name
