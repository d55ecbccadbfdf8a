"""Training methods: one module per method, one registry.

Each method is a ``torch.nn.Module`` on the small interface of :class:`vprob.methods.base.Method`
(training objective on a batch of views, point embeddings, declared capabilities and options). The engine,
the command line, the diagnostics and the anomaly protocol look methods up here and ask their declarations.

To add a method: write one module with a ``Method`` subclass and add it to ``METHODS`` below (or call
:func:`register_method` from your own code).
"""

from __future__ import annotations

from vprob.methods.base import Capabilities, Method
from vprob.methods.cct import CCT
from vprob.methods.point import PointEmbedding
from vprob.methods.projnce import ProjNCE
from vprob.methods.simclr import SimCLR
from vprob.methods.supcon import SupCon
from vprob.methods.vcl import VSimCLR, VSupCon
from vprob.methods.vje import VJE

METHODS: dict[str, type[Method]] = {
    method.name: method for method in (SimCLR, VSimCLR, SupCon, VSupCon, ProjNCE, CCT, VJE)
}


def register_method(method: type[Method]) -> type[Method]:
    """Add a method class to the registry (usable as a class decorator); its ``name`` must be new."""
    if not (isinstance(method, type) and issubclass(method, Method)):
        raise TypeError(f"register_method needs a subclass of vprob.methods.Method, got {method!r}")
    name = getattr(method, "name", None)
    if not isinstance(name, str) or not name.isidentifier() or name in METHODS:
        raise ValueError(f"method name must be a new identifier, got {name!r} (taken: {sorted(METHODS)})")
    METHODS[name] = method
    return method


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; ValueError listing the registered names otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(METHODS)}") from None


def methods_with(**capabilities: bool) -> tuple[str, ...]:
    """Names of the registered methods whose capabilities have the given values (``variational=True``)."""
    return tuple(
        name
        for name, method in METHODS.items()
        if all(getattr(method.capabilities, key) == value for key, value in capabilities.items())
    )


__all__ = [
    "CCT",
    "METHODS",
    "VJE",
    "Capabilities",
    "Method",
    "PointEmbedding",
    "ProjNCE",
    "SimCLR",
    "SupCon",
    "VSimCLR",
    "VSupCon",
    "get_method",
    "methods_with",
    "register_method",
]
