"""The Python API: use a trained model from a script or notebook, or train one, without a shell.

    import charrnn_cli as charrnn
    model = charrnn.load("runs/shakespeare/best.npz")
    text = model.sample("ROMEO:", length=300, temperature=0.8, rng_seed=1)
    nats = model.score("To be, or not to be")          # nats per character, as `charrnn eval`
    for piece in model.stream("ROMEO:", length=1000):  # characters as they are generated
        print(piece, end="")
    names = model.items(10, novel=True)                 # a model trained in lines mode
    result = charrnn.train("configs/tiny.yaml", overrides={"training.max_steps": 50})

Each call does what the command of the same name does, with the same options and the same
results for the same seed; user errors raise the library's exceptions (CheckpointError,
ConfigError, DataError, ...), whose message is the line the command would print, and ValueError
for bad arguments.
"""

import math
import os

import numpy as np
import yaml

from .io import checkpoint as ckpt
from .io.config import ConfigError
from .io.targets import config_for, find_target, resume_path
from .io.data import as_items_text
from .training.evaluate import score as _score
from .tools.sample import check_options, default_prime, generate, new_items, training_items


def load(path):
    """The model in a checkpoint, checked as `charrnn sample` checks it."""
    return Model(ckpt.load(path))


class Model:
    """A trained model: its checkpoint's config and vocabulary, and the network in float32."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint
        self.path = checkpoint.path
        self.config = checkpoint.config
        self.vocab = checkpoint.vocab
        self.net = checkpoint.build_model()

    def __repr__(self):
        m = self.config.model
        return f"<charrnn model {m.type} {m.num_layers}x{m.hidden_size}, {len(self.vocab)} characters, {self.path}>"

    def _prime(self, prime):
        if prime is None:
            return default_prime(self.vocab)
        check_options(prime=prime)
        unknown = self.vocab.unknown(prime)
        if unknown:
            raise ValueError(f"prime has characters not in the vocabulary: {' '.join(map(repr, unknown))}")
        return prime

    @staticmethod
    def _check(length, temperature, top_k, top_p, items=None):
        check_options(length, temperature, top_k, top_p, items=items)

    def stream(self, prime=None, length=500, temperature=1.0, top_k=None, top_p=None, argmax=False,
               rng_seed=None):
        """Yield the generated characters one at a time (the priming text is not repeated)."""
        self._check(length, temperature, top_k, top_p)
        _check_seed(rng_seed)
        rng = np.random.default_rng(rng_seed)
        pieces = generate(self.net, self.vocab, self._prime(prime), length, temperature, top_k, argmax, rng, 1, top_p)
        next(pieces)  # the priming text
        for _, ch in pieces:
            yield ch

    def sample(self, prime=None, length=500, temperature=1.0, top_k=None, top_p=None, argmax=False,
               rng_seed=None):
        """The priming text followed by `length` generated characters: `charrnn sample`'s text."""
        self._check(length, temperature, top_k, top_p)
        prime = self._prime(prime)
        return prime + "".join(self.stream(prime, length, temperature, top_k, top_p, argmax, rng_seed))

    def score(self, text):
        """Nats per character of `text` (every character after the first predicted, from a zero
        state carried through), as `charrnn eval`; characters outside the vocabulary are left out."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        kept = "".join(c for c in text if self.vocab.covers(c))  # as eval: outside characters folded or left out
        if len(kept) < 2:
            raise ValueError("nothing to score: fewer than two characters in the vocabulary")
        nl = self.vocab.index("\n") if self.config.data.mode == "lines" else None
        idx = self.vocab.encode(kept if nl is None else as_items_text(kept))  # lines: as eval reads a file
        nats, _ = _score(self.net, idx, streams=1, seq_length=256, nl=nl)
        return nats

    def items(self, n, novel=False, temperature=1.0, top_k=None, top_p=None, argmax=False, rng_seed=None,
              max_length=500):
        """n items from a model trained in lines mode, as `charrnn sample --items n [--novel]`."""
        if self.config.data.mode != "lines" or "\n" not in self.vocab:
            raise ValueError(f"{self.path} was trained with data.mode {self.config.data.mode}: items need a model "
                             f"trained on items (data.mode: lines)")
        self._check(max_length, temperature, top_k, top_p, items=n)
        _check_seed(rng_seed)
        known = training_items(self.config.data.path, self.path) if novel else set()
        items, _, _ = new_items(self.net, self.vocab, n, known, temperature, top_k, argmax,
                                np.random.default_rng(rng_seed), max_length, top_p)
        return items


def _check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"rng_seed must be an integer >= 0 or None, got {seed!r:.40}")


def train(config=None, overrides=None, resume=None, overwrite=False, minutes=None, quiet=True, echo=None):
    """Train as `charrnn train` does; returns its Result (progress, validation loss, stop reason,
    the run folder, the trained model in .model).

    config: a YAML path, a text file (the default model on it, into runs/NAME), or a Config; None
    with resume: the run's own config, stored in the checkpoint. overrides: {"section.key": value},
    as --set. resume: a checkpoint path, or a run folder for its latest.npz (the run goes on in its
    folder unless overrides name output.dir).
    """
    from .io.config import Config
    from .training.loop import train as run_training

    if config is not None and not isinstance(config, (str, os.PathLike, Config)):
        raise TypeError(f"config must be a YAML path, a text file's path or a Config, got {type(config).__name__}")
    if resume is not None and not isinstance(resume, (str, os.PathLike)):
        raise TypeError(f"resume must be a checkpoint's or run folder's path, got {type(resume).__name__}")
    if overrides is not None and not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict of 'section.key': value, got {type(overrides).__name__}")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float))
                                or not math.isfinite(minutes) or minutes <= 0):
        raise ValueError(f"minutes must be a finite number > 0, got {minutes!r:.40}")
    sets = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in (overrides or {}).items()]
    resume = resume_path(resume)
    if config is None and resume is None:
        raise ValueError("give a config (a YAML path, a text file or a Config), or resume=CHECKPOINT")
    if config is None or isinstance(config, (str, os.PathLike)):
        target = None if config is None else find_target(os.fspath(config))[0]  # a bundled config's name too
        cfg = config_for(target, sets, resume)
    else:
        if sets:
            raise ConfigError("overrides go with a config path; change a Config object's fields directly")
        cfg = config
    if resume is not None and "output.dir" not in (overrides or {}):
        cfg.output.dir = os.path.dirname(resume) or "."
    return run_training(cfg, resume=resume, quiet=quiet, echo=echo or (lambda msg: None), overwrite=overwrite,
                        minutes=minutes)
