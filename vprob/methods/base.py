"""The interface every training method implements, and the options most of them share.

A method is a ``torch.nn.Module`` around an ``encoder`` that

* computes its **training objective** on a batch of views: ``training_loss(views, labels)`` with views
  (V, B, C, H, W) and labels (B,), returning the scalar loss and a dict of detached scalars to log;
* gives **point embeddings** ``embed(x)`` (N, d) of images x (N, C, H, W) for kNN, probes and diagnostics;
* **declares** what it is (:class:`Capabilities`) and its options (``options``, each a
  :class:`vprob.options.Option`), from which the command line, ``config.json`` and validation are generated;
* is built from those options by ``from_options(encoder, options, gather)``.

Methods with uncertainty scores add ``uncertainty(x) -> {name: (N,)}``; methods with a likelihood-based
anomaly score add ``anomaly_scores(images, augment, ...)``. The engine, the diagnostics, the anomaly protocol
and the command line ask these declarations, never a method's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from torch import Tensor, nn

from vprob.options import Option, positive

Objective = Callable[[Tensor, Tensor | None], tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class Capabilities:
    """What a method is and can do.

    Attributes:
        variational: a Pyro model/guide pair trained through an ELBO.
        needs_labels: the objective uses class labels (supervised).
        num_views: the number of views it takes, or ``None`` when the ``num_views`` option chooses (>= 2).
        distributed: trains under several processes (its loss has a gathered form).
        uncertainty: gives per-image uncertainty scores (``uncertainty(x)``).
        anomaly: gives likelihood-based anomaly scores (``anomaly_scores``); every method gives kNN scores.
        spherical_posterior: its posterior is a distribution on the sphere over a Pyro site ``"z"``
            (posterior sampling, arviz and geomstats diagnostics apply).
    """

    variational: bool = False
    needs_labels: bool = False
    num_views: int | None = 2
    distributed: bool = False
    uncertainty: bool = False
    anomaly: bool = False
    spherical_posterior: bool = False


# Options several methods declare (each lists the ones it uses).
DIM = Option(
    "dim",
    int,
    128,
    "embedding dimension d (the sphere S^(d-1) in R^d)",
    check=lambda v: v >= 2,
    requirement=">= 2",
)
HEAD_HIDDEN = positive(
    "head_hidden", int, None, "hidden width of the head (default: the backbone's width)", nullable=True
)
TAU = positive("tau", float, 0.07, "temperature of the contrastive loss")
NUM_VIEWS = Option(
    "num_views", int, 2, "augmented views per image", check=lambda v: v >= 2, requirement=">= 2"
)
CHUNK_SIZE = Option(
    "chunk_size",
    int,
    None,
    "anchors per chunk of the memory-lean loss (0: naive; default: automatic)",
    check=lambda v: v >= 0,
    requirement=">= 0",
    nullable=True,
)


class Method:
    """Mixed into a ``torch.nn.Module``: the declarations and the construction of a training method.

    Subclasses set ``name``, ``capabilities`` and ``options`` and implement ``training_loss`` and
    ``embed``; ``from_options`` calls ``cls(encoder, **options)`` (override it when the constructor's
    arguments differ from the option names).
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    options: ClassVar[tuple[Option, ...]] = ()
    summary: ClassVar[str] = ""

    @classmethod
    def from_options(cls, encoder: nn.Module, options: Mapping[str, Any], gather: bool = False) -> nn.Module:
        """The method around ``encoder`` with resolved ``options``; ``gather``: contrast against every
        process's embeddings (multi-process training; only for ``capabilities.distributed``)."""
        kwargs = dict(options)
        if gather:
            kwargs["gather"] = True
        return cls(encoder, **kwargs)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(option.name for option in cls.options)

    def training_loss(self, views: Tensor, labels: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def objective(self, elbo: Any = None) -> Objective:
        """What the engine minimizes: ``objective(views, labels) -> (loss, stats)``. For variational methods
        ``elbo`` chooses the ELBO (default: the method's own, ``self.elbo()``); others take none."""
        if not self.capabilities.variational:
            if elbo is not None:
                raise ValueError(f"method {self.name!r} is not variational: it takes no ELBO")
            return self.training_loss
        return partial(self.training_loss, elbo=self.elbo() if elbo is None else elbo)

    def embed(self, x: Tensor) -> Tensor:
        raise NotImplementedError
