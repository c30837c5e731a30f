"""The YAML reader for configs: PyYAML's safe loader, bounded and stricter.

Numbers in exponent form without a dot (`1e-3`, which YAML 1.1 reads as a string) are floats, as
in YAML 1.2; a key given twice in one mapping is an error naming both lines, not a silent
last-one-wins; a key must be a name. A config from someone else may nest deeply or expand
aliases into billions of values (a "billion laughs"): depth and size are bounded, and every value
quoted in a message is cut short (`short`).
"""

import re
import reprlib

import yaml


class ConfigError(ValueError):
    """A user error in a config file or override: the message names the key."""


# Bounds on what a config may hold: a config from someone else may nest deeply or expand aliases
# into billions of values (a "billion laughs"). A real config is two levels deep and a few dozen values.
MAX_DEPTH = 16
MAX_VALUES = 10_000
_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 60, 60


def short(value, limit=80):
    """repr(value) cut short, for a message; never walks more of a value than it shows.

    >>> short([[1, 2, [3, [4]]]] * 100, 30)
    '[[1, 2, [3, [...]]], [1, 2,...'
    """
    text = _repr.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cut(text, limit=60):
    """A name for a message, cut short. _cut("abc", 2) == 'a…'"""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_size(value, what="the config"):
    """ConfigError when `value` nests deeper than MAX_DEPTH or holds more than MAX_VALUES values
    (aliases counted as often as they are used); stops walking as soon as either is passed."""
    todo, seen = [(value, 0)], 0
    while todo:
        v, depth = todo.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what} nests deeper than {MAX_DEPTH} levels: not a charrnn config")
        if seen > MAX_VALUES:
            raise ConfigError(f"{what} holds more than {MAX_VALUES:,} values (nested lists or YAML aliases): "
                              f"not a charrnn config")
        if isinstance(v, dict):
            todo.extend((x, depth + 1) for kv in v.items() for x in kv)
        elif isinstance(v, (list, tuple)):
            todo.extend((x, depth + 1) for x in v)


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader, with YAML 1.2 floats (1e-3) and duplicate keys refused."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _compose_node(self, parent, index):
    """PyYAML's compose_node, with the depth bounded: its composer recurses once per level."""
    self._depth = getattr(self, "_depth", 0) + 1
    try:
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise ConfigError(f"{getattr(self, 'source_name', 'the config')} nests deeper than {MAX_DEPTH} levels "
                              f"at line {mark.line + 1}: not a charrnn config")
        return yaml.SafeLoader.compose_node(self, parent, index)
    finally:
        self._depth -= 1


_Loader.compose_node = _compose_node


def _mapping_without_duplicates(loader, node):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, (str, int, float, bool, type(None))):
            raise ConfigError(f"line {key_node.start_mark.line + 1} of {getattr(loader, 'source_name', 'the config')}"
                              f": a key must be a name, not a {type(key).__name__}")
        if key in seen:
            raise ConfigError(f"duplicate key {short(key)}: lines {seen[key] + 1} and {key_node.start_mark.line + 1}"
                              f" of {getattr(loader, 'source_name', 'the config')} (the last would win silently)")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_yaml(text_or_stream, source_name="the config"):
    """yaml.safe_load with the two changes above. parse_yaml("lr: 1e-3") == {'lr': 0.001}"""
    loader = _Loader(text_or_stream)
    loader.source_name = source_name
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    check_size(data, source_name)
    return data
