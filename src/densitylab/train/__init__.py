"""Training: the trainer, crash-safe checkpoints and run directories, mixed precision and
distributed (torchrun / DDP) runs."""
