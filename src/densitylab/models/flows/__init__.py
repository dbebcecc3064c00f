"""Normalizing flows: transforms (data -> noise) and the dequantized image models built on them."""
