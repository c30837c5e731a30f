"""Every snippet of the README runs, in order, as a newcomer would run it after the quick start:
in an empty folder, with the installed `charrnn` (its bundled configs and texts), each `$ ` line of
a console block as a command and each Python block as a script. The quick start's ten-minute
training is cut to a few steps; everything else runs as written."""

import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--set", "training.max_steps=20", "--set", "training.eval_every=10"]  # minutes of training cut to steps


def blocks(text):
    """(kind, body) of every fenced block, in order: kind 'console', 'python', 'bash' or ''."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def readme_steps():
    """The README as steps: ('cmd', argv or shell line) and ('python', source), in order."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    steps = []
    for kind, body in blocks(text):
        if kind == "python" and "import torch" not in body:
            steps.append(("python", body))
        elif kind == "bash" and "charrnn train configs/shakespeare.yaml" in body and "pip install ." in body:
            for part in body.strip().split(" && "):  # the quick start, without its venv and install
                if part.startswith("charrnn "):
                    steps.append(("cmd", part))
        elif kind == "":
            steps += [("cmd", line[2:]) for line in body.splitlines() if line.startswith("$ ")]
    return steps


def charrnn(line, cwd):
    """Run one `charrnn ...` line (a shell line for anything else) as the installed program would."""
    if not line.startswith("charrnn "):
        return subprocess.run(line, shell=True, cwd=cwd, capture_output=True, text=True, timeout=120)
    argv = shlex.split(line)[1:]
    if argv[0] == "train" and "--list" not in argv:
        argv = [a for a in argv if a != "--minutes" and not re.fullmatch(r"\d+", a)] + SHORT
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "charrnn_cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_every_readme_snippet_runs_in_order_after_the_quick_start(tmp_path):
    steps = readme_steps()
    commands = [s for kind, s in steps if kind == "cmd"]
    assert commands[0].startswith("charrnn train configs/shakespeare.yaml") and len(steps) >= 10, steps
    seen = set()
    for kind, body in steps:
        if kind == "cmd":
            if body in seen:  # the same command shown twice (its output in two places) runs once
                continue
            seen.add(body)
            r = charrnn(body, tmp_path)
            assert r.returncode == 0, (body, r.stdout[-2000:], r.stderr[-2000:])
            assert "Traceback" not in r.stderr, (body, r.stderr)
        else:
            r = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, capture_output=True, text=True,
                               timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
            assert r.returncode == 0, (body, r.stderr[-2000:])


def test_the_readme_is_at_most_300_lines():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        assert len(fh.read().splitlines()) <= 300
