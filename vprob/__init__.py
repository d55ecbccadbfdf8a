"""vprob: probabilistic contrastive and joint-embedding self-supervised learning on Pyro."""

# The one place the version is written: pyproject.toml reads it from here at build time
# ([tool.setuptools.dynamic]), so the installed metadata and vprob.__version__ cannot disagree.
__version__ = "0.2.0"
