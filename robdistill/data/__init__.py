"""Datasets as in-memory [0, 1] tensors with deterministic train / validation / test splits."""
