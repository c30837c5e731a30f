"""charrnn: character-level RNN, LSTM and GRU language models in plain NumPy.

The Python API (api.py): charrnn_cli.load(checkpoint) -> Model (.sample, .stream, .score, .items)
and charrnn_cli.training.loop(config, overrides=...). They are imported on first use, so that importing
the package (as the `charrnn` command does) does not load NumPy before `--threads` is applied.
"""

__version__ = "0.1.0"
__all__ = ["load", "train", "Model"]


def __getattr__(name):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
