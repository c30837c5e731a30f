"""What a trained model is used for: sampling, the visualization page, plots of runs."""
