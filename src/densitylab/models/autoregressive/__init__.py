"""Autoregressive models: exact log-likelihoods from a product of conditionals."""
