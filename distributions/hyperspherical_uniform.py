"""Uniform distribution on the unit hypersphere S^{d-1} in R^d."""

from __future__ import annotations

import math
import operator

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.ops.tensor_utils import safe_normalize

__all__ = ["HypersphericalUniform", "log_sphere_area"]


def log_sphere_area(dim: int) -> float:
    r"""Log surface area of the unit sphere :math:`S^{d-1} \subset \mathbb{R}^d`.

    .. math::

        \log |S^{d-1}| = \log 2 + \tfrac{d}{2} \log \pi - \log\Gamma(d/2),

    computed with :func:`math.lgamma`, so it is exact in double precision for any ``d`` (no overflow at
    ``d = 4096``).

    :param int dim: the ambient dimension ``d >= 1`` (``d = 2``: the circle, area ``2 pi``).
    """
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


def _check_dim(dim) -> int:
    """Return ``dim`` as an ``int`` or raise ``ValueError`` naming the argument."""
    if isinstance(dim, bool):
        raise ValueError(f"dim must be an integer >= 2 (the ambient dimension), got {dim!r}")
    try:
        dim_int = operator.index(dim)
    except TypeError:
        raise ValueError(f"dim must be an integer >= 2 (the ambient dimension), got {dim!r}") from None
    if dim_int < 2:
        raise ValueError(f"dim must be an integer >= 2 (the ambient dimension), got {dim_int}")
    return dim_int


class HypersphericalUniform(TorchDistribution):
    r"""Uniform distribution on the unit sphere :math:`S^{d-1} = \{u \in \mathbb{R}^d : |u| = 1\}`.

    The density with respect to the surface measure of :math:`S^{d-1}` is constant,

    .. math::

        \log p(u) = -\log |S^{d-1}|, \qquad
        \log |S^{d-1}| = \log 2 + \tfrac{d}{2}\log\pi - \log\Gamma(d/2),

    the entropy is :math:`\log |S^{d-1}|` and the mean is the zero vector. Samples are
    ``normalize(N(0, I_d))`` (the standard normal is rotation invariant, so its direction is uniform);
    :meth:`rsample` is reparameterized trivially (there is no parameter to differentiate).

    It is the prior :math:`p(z)` of VCL (docs/maths.md: Uniform, VCL) and the reference measure of
    the projected normal.

    .. warning:: ``dim`` is the **ambient** dimension ``d``: samples have ``event_shape == (d,)``.
        s-vae-pytorch's ``HypersphericalUniform(dim)`` and geomstats' ``Hypersphere(dim)`` count the
        **manifold** dimension ``d - 1`` instead, so ``HypersphericalUniform(3)`` here is
        ``Hypersphere(2)`` there. (power-spherical's class counts the ambient dimension, as here.)

    Example, a uniform prior on the sphere inside a Pyro model::

        with pyro.plate("data", len(x)):
            z = pyro.sample("z", HypersphericalUniform(128))       # z.shape == (len(x), 128)
            pyro.sample("x", ProjectedNormal(10.0 * z), obs=x)

    :param int dim: ambient dimension ``d >= 2`` (an ``int`` or anything with ``__index__``).
    :param torch.Size batch_shape: batch shape; the distribution is the same for every batch element.
    :param device: device of samples and of the tensors it returns (default: CPU).
    :param dtype: floating dtype of samples (default: ``torch.get_default_dtype()`` at construction).
    :param bool validate_args: whether to validate values passed to :meth:`log_prob`.
    """

    arg_constraints = {}
    support = constraints.sphere
    has_rsample = True

    def __init__(
        self,
        dim: int,
        batch_shape: torch.Size | tuple[int, ...] = (),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self._dim = _check_dim(dim)
        self._device = torch.device("cpu") if device is None else torch.device(device)
        self._dtype = torch.get_default_dtype() if dtype is None else dtype
        if not self._dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {self._dtype}")
        self._log_area = log_sphere_area(self._dim)
        super().__init__(torch.Size(batch_shape), torch.Size((self._dim,)), validate_args=validate_args)

    @property
    def dim(self) -> int:
        """The ambient dimension ``d`` (``event_shape == (d,)``)."""
        return self._dim

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @classmethod
    def infer_shapes(cls, dim=(), batch_shape=()) -> tuple[torch.Size, torch.Size]:
        """Pyro's shapes-only protocol: ``(batch_shape, event_shape)`` from the *shapes* of the arguments.

        Neither argument is a tensor: ``batch_shape`` is a shape already, and the event size is the *value*
        of ``dim``. So the ambient dimension must be given as the event shape ``dim=(d,)``; the shape of
        a Python integer, ``()`` (what a generic caller passes for a non-tensor argument), says nothing
        about ``d``, and raises ``NotImplementedError`` as Pyro does for distributions whose shapes depend
        on values (e.g. ``LKJCholesky``).

        :param dim: the event shape ``(d,)``.
        :param batch_shape: the batch shape.
        :raises NotImplementedError: for ``dim=()``.
        :raises TypeError: for a value where a shape is expected (e.g. ``dim=5``).
        """
        shapes = {}
        for name, shape in (("dim", dim), ("batch_shape", batch_shape)):
            if torch.is_tensor(shape) or not isinstance(shape, (tuple, list, torch.Size)):
                raise TypeError(
                    f"HypersphericalUniform.infer_shapes takes shapes (tuples of ints), got "
                    f"{name} = {shape!r}; for the distribution with dim = d pass dim=(d,)"
                )
            shapes[name] = torch.Size(shape)
        if len(shapes["dim"]) == 0:
            raise NotImplementedError(
                "HypersphericalUniform's event shape (d,) is the value of dim, not the "
                "shape of a tensor argument: pass dim=(d,) or build the distribution"
            )
        if len(shapes["dim"]) != 1:
            raise ValueError(
                f"HypersphericalUniform.infer_shapes: dim must be the event shape (d,), got "
                f"{tuple(shapes['dim'])}"
            )
        return shapes["batch_shape"], torch.Size((_check_dim(shapes["dim"][0]),))

    def expand(self, batch_shape, _instance=None) -> HypersphericalUniform:
        """Expand to ``batch_shape`` under torch's rules: each existing batch size must be kept or be 1."""
        batch_shape = torch.Size(batch_shape)
        try:
            # torch.Tensor.expand's own rule, on a meta tensor (shapes only, nothing allocated)
            torch.empty(self.batch_shape, device="meta").expand(batch_shape)
        except RuntimeError as e:
            raise ValueError(
                f"HypersphericalUniform.expand: cannot expand batch_shape "
                f"{tuple(self.batch_shape)} to {tuple(batch_shape)} ({e})"
            ) from e
        new = self._get_checked_instance(HypersphericalUniform, _instance)
        new._dim = self._dim
        new._device = self._device
        new._dtype = self._dtype
        new._log_area = self._log_area
        super(HypersphericalUniform, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        x = torch.randn(shape, dtype=self._dtype, device=self._device)
        return safe_normalize(x)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        dtype = value.dtype if value.dtype.is_floating_point else self._dtype
        return torch.full(shape, -self._log_area, dtype=dtype, device=value.device)

    def entropy(self) -> torch.Tensor:
        return torch.full(self.batch_shape, self._log_area, dtype=self._dtype, device=self._device)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self.batch_shape + self.event_shape, dtype=self._dtype, device=self._device)

    @property
    def variance(self) -> torch.Tensor:
        """Per-coordinate variance ``1 / d`` (the covariance is ``I_d / d``)."""
        return torch.full(
            self.batch_shape + self.event_shape, 1.0 / self._dim, dtype=self._dtype, device=self._device
        )
