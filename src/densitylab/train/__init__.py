"""Training: the trainer, crash-safe checkpoints and run directories."""
