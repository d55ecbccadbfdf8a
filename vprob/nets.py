"""Encoders and projection heads (pure PyTorch).

Backbones map normalized images (N, C, H, W) to features (N, feature_dim) and carry a ``feature_dim``
attribute; heads map features to the embedding the loss sees.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["BACKBONE_NAMES", "LOG_VARIANCE_RANGE", "DigitsConvNet", "MLPHead", "feature_dim_of",
           "make_backbone", "resnet18_cifar"]

BACKBONE_NAMES = ("resnet18_cifar", "digits_convnet")

# Heads that predict a log variance clamp it to this range: exp() stays finite in bf16/fp32 (and VJE's
# tangent t proper) during the first unstable steps.
LOG_VARIANCE_RANGE = (-12.0, 8.0)


def resnet18_cifar() -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: (N, 3, 32, 32) -> (N, 512).

    conv1 becomes 3x3 stride 1 (padding 1) and the stem max-pool is removed, so 32x32 inputs keep a 4x4
    map before the global average pool (as in SimCLR's CIFAR-10 experiments); ``fc`` is the identity.
    """
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.feature_dim = 512
    return model


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


def feature_dim_of(encoder: nn.Module) -> int:
    """The output width F of a backbone (N, C, H, W) -> (N, F), from its ``feature_dim`` attribute."""
    feature_dim = getattr(encoder, "feature_dim", None)
    if isinstance(feature_dim, bool) or not isinstance(feature_dim, int):
        raise TypeError("encoder must have an integer attribute feature_dim (its output width)")
    return feature_dim


def make_backbone(name: str, **kwargs) -> nn.Module:
    """A backbone by name: "resnet18_cifar" or "digits_convnet" (``kwargs`` go to DigitsConvNet)."""
    if name == "resnet18_cifar":
        if kwargs:
            raise TypeError(f"resnet18_cifar takes no options, got {sorted(kwargs)}")
        return resnet18_cifar()
    if name == "digits_convnet":
        return DigitsConvNet(**kwargs)
    raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONE_NAMES)}")

