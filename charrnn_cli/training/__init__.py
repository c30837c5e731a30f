"""The training loop and what it needs: the run folder, signals, the progress bar and scoring."""
