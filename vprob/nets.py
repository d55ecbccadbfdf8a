"""Encoders and projection heads (pure PyTorch), and the output width of any encoder.

Backbones map normalized images (N, C, H, W) to features (N, F); vprob's own carry a ``feature_dim``
attribute, and :func:`feature_dim_of` finds F for any other ``nn.Module`` by one dry forward pass. Heads map
features to the embedding the loss sees. The registry of named backbones is :mod:`vprob.backbones`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LOG_VARIANCE_RANGE", "DigitsConvNet", "MLPHead", "feature_dim_of", "resnet18_cifar"]

# Heads that predict a log variance clamp it to this range: exp() stays finite in bf16/fp32 (and VJE's
# tangent t proper) during the first unstable steps.
LOG_VARIANCE_RANGE = (-12.0, 8.0)


def resnet18_cifar() -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: (N, 3, 32, 32) -> (N, 512).

    conv1 becomes 3x3 stride 1 (padding 1) and the stem max-pool is removed, so 32x32 inputs keep a 4x4
    map before the global average pool (as in SimCLR's CIFAR-10 experiments); ``fc`` is the identity.
    The registry's ``resnet18_cifar`` (:mod:`vprob.backbones`).
    """
    from vprob.backbones import make_backbone

    return make_backbone("resnet18_cifar")


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class DigitsConvNet(nn.Module):
    """A small conv net for 8x8 grayscale digits: (N, 1, 8, 8) -> (N, feature_dim).

    conv(1->w) and conv(w->w) at 8x8, max-pool to 4x4, conv(w->2w), then a linear layer on the flattened
    4x4 map (position matters for digits, so no global pooling) with BatchNorm and ReLU, so the features
    are non-negative like a ResNet's pooled features. With w = 32: about 1 M multiply-adds per image, and
    a training step of 512 images (forward + backward, with a projector) takes ~50 ms on one CPU core,
    so 30 epochs x 2 views of the 1,437 training digits take well under 10 s.
    """

    def __init__(self, feature_dim: int = 128, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(
            nn.Linear(2 * width * 4 * 4, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (8, 8):
            raise ValueError(f"DigitsConvNet expects 8x8 images, got {tuple(x.shape)}")
        return self.fc(self.features(x))


class MLPHead(nn.Module):
    """SimCLR projector: (N, in_dim) -> (N, out_dim).

    ``num_layers`` linear layers; all but the last are followed by BatchNorm (if ``batch_norm``) and ReLU.
    Linear layers followed by BatchNorm have no bias (the BatchNorm shift replaces it).
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# Image sizes the dry pass tries when it has to guess the input shape: the common ones, small first.
_GUESSED_SIZES = (32, 8, 28, 64, 96, 224, 16)


def feature_dim_of(
    encoder: nn.Module, feature_dim: int | None = None, image_shape: tuple[int, int, int] | None = None
) -> int:
    """The output width F of an encoder (N, C, H, W) -> (N, F).

    In order: ``feature_dim`` if given (checked to be a positive integer); else the encoder's integer
    ``feature_dim`` attribute (vprob's backbones); else one dry forward pass of a (2, C, H, W) batch of
    zeros, in eval mode and without gradients (the modules' training flags are restored), so it changes no
    BatchNorm statistics and draws no random numbers. The input shape (C, H, W) is ``image_shape`` if given,
    else guessed from the encoder's first layer: a ``Conv2d``'s ``in_channels`` at 32, 8, 28, 64, 96, 224
    and 16 px, or a first ``Linear``'s ``in_features`` read as a flattened square image of 1 or 3 channels
    (``Linear(64, ...)``: 1 x 8 x 8).

    Why a dry pass at construction rather than lazy heads materialized on the first batch: the engine,
    Pyro's ``pyro.module`` and every optimizer collect parameters when they are built, before any batch,
    and would hold uninitialized ones. For the same reason an encoder that still has lazy (uninitialized)
    parameters is refused: call it once on a batch of real images first.

    Raises:
        ValueError: ``feature_dim`` is not a positive integer; the encoder has uninitialized parameters;
            its output is not (N, F); or no tried input shape runs (the message says to pass
            ``feature_dim=``).
        TypeError: ``encoder`` is not an ``nn.Module``.
    """
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
    if feature_dim is not None:
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive integer or None, got {feature_dim!r}")
        return feature_dim
    declared = getattr(encoder, "feature_dim", None)
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in encoder.parameters()):
        raise ValueError(
            "encoder has lazy (uninitialized) parameters: call it once on a batch of your "
            "images before building the model (optimizers and pyro.module need real ones), "
            "or pass feature_dim= and build the encoder with explicit sizes"
        )
    shapes = [tuple(image_shape)] if image_shape is not None else _guess_image_shapes(encoder)
    errors = []
    for shape in shapes:
        try:
            out = _dry_forward(encoder, shape)
        except Exception as exc:  # any failure means "not this input shape": try the next one
            errors.append(f"{shape}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
            continue
        if not isinstance(out, Tensor) or out.ndim != 2:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"encoder must map images (N, C, H, W) to features (N, F); it returned {got} "
                f"for an input of shape {(2, *shape)}: end it with pooling and flattening"
            )
        return int(out.shape[1])
    raise ValueError(
        "could not find the encoder's output width by a dry forward pass (tried input shapes "
        f"{'; '.join(errors)}); pass feature_dim= (its output width) to the model"
    )


def _guess_image_shapes(encoder: nn.Module) -> list[tuple[int, int, int]]:
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d):
            return [(module.in_channels, size, size) for size in _GUESSED_SIZES]
        if isinstance(module, nn.Linear):
            shapes = []
            for channels in (1, 3):
                side = round((module.in_features / channels) ** 0.5)
                if channels * side * side == module.in_features:
                    shapes.append((channels, side, side))
            return shapes
    return [(3, size, size) for size in _GUESSED_SIZES] + [(1, 8, 8)]


@torch.no_grad()
def _dry_forward(encoder: nn.Module, shape: tuple[int, ...]) -> Tensor:
    reference = next(iter(encoder.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    modes = [(module, module.training) for module in encoder.modules()]
    encoder.eval()
    try:
        return encoder(torch.zeros(2, *shape, device=device, dtype=dtype))
    finally:
        for module, mode in modes:
            module.training = mode
