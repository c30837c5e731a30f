"""The README and docs/ stay in step: every relative link resolves, to a file and to a heading."""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
    slug("Training on several processes or machines") == "training-on-several-processes-or-machines" """
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # no headings inside code blocks
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def markdown_files():
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def test_slug_worked_examples():
    assert slug("Reliability: what charrnn promises") == "reliability-what-charrnn-promises"
    assert slug("`charrnn viz`: how the page is made") == "charrnn-viz-how-the-page-is-made"


def test_every_relative_link_resolves():
    checked = 0
    for path in markdown_files():
        text = re.sub(r"```.*?```", "", open(path, encoding="utf-8").read(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):  # http:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = path if not file_part else os.path.normpath(os.path.join(os.path.dirname(path), file_part))
            assert os.path.exists(dest), f"{os.path.relpath(path, ROOT)} links to missing {target}"
            if anchor:
                assert anchor in anchors(dest), f"{os.path.relpath(path, ROOT)} links to missing heading {target}"
            checked += 1
    assert checked > 20  # the README links into docs/ throughout


def test_the_readme_is_a_guide_that_links_every_doc():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    for doc in glob.glob(os.path.join(ROOT, "docs", "*.md")):
        assert f"docs/{os.path.basename(doc)}" in readme, f"README does not link {doc}"


def test_the_readme_shows_every_command():
    from charrnn_cli.cli import main

    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    commands = open(os.path.join(ROOT, "docs", "commands.md"), encoding="utf-8").read()
    for name in main.commands:
        assert f"**`charrnn {name} " in readme or f"**`charrnn {name}`**" in readme, name
        assert f"## `charrnn {name}" in commands, name
