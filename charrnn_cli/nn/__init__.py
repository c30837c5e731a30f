"""The math: the cells (RNN, LSTM, GRU) forward and backward, the model over a chunk, the optimizers,
the gradient check, and reference.py, the same math stated plainly (read that first)."""
