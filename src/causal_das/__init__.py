"""causal_das: Distributed Alignment Search (DAS) for finding and disentangling causal models."""

__version__ = "0.1.0"
