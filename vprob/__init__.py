"""vprob: probabilistic contrastive and joint-embedding self-supervised learning on Pyro."""

__version__ = "0.1.0"
