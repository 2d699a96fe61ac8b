"""Training one run: model and weights, resume, the training loop, final checkpoint, evaluation."""
