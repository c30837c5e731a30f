"""charrnn: character-level RNN, LSTM and GRU language models in plain NumPy."""

__version__ = "0.1.0"
