"""The backbone registry: one entry per encoder network, built for the data set's image size and channels.

A backbone maps normalized images (N, C, H, W) to features (N, F) and carries an integer ``feature_dim``
(F). The torchvision ones are torchvision's own models with the classifier replaced by the identity, so
their ``state_dict`` has exactly the keys and shapes of the torchvision model without ``fc`` / ``heads``
(``vprob export`` writes it; ``--init-from`` reads it back or reads torchvision's published weights).

=================  ==========================================================================================
name               network
=================  ==========================================================================================
resnet18/34/50     torchvision's ResNet. Stem ``cifar`` (a 3x3 stride-1 conv1, no max-pool; the default for
                   images up to 64 px) or ``imagenet`` (7x7 stride-2 conv1 and max-pool; the default above).
resnet18_cifar     resnet18 with the CIFAR stem always (the name older runs and checkpoints use).
vit_small          torchvision's ``VisionTransformer`` in the ViT-S shape (12 layers, 6 heads, width 384,
                   MLP 1536), patch 4 at 32 px, 16 at 224 px (see :func:`vit_patch_size`).
digits_convnet     :class:`vprob.nets.DigitsConvNet` for 8x8 digits.
=================  ==========================================================================================

To add a backbone: write ``build(image_size, channels, stem) -> nn.Module`` and register a
:class:`BackboneSpec` (:func:`register_backbone`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from vprob.nets import DigitsConvNet

STEMS = ("cifar", "imagenet")
# The CIFAR stem keeps small images at full resolution through the first stage (ResNet's own stem divides
# a 32 px image by 4 before layer1); above 64 px the ImageNet stem's downsampling is affordable.
CIFAR_STEM_MAX_SIZE = 64
# ViT-S/16 at 224 px sees 14 x 14 patches: other sizes take the smallest patch giving at most 14 per side.
VIT_MAX_PATCHES_PER_SIDE = 14

Builder = Callable[[int, int, "str | None"], nn.Module]


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone.

    Attributes:
        name: the ``--backbone`` name.
        build: ``build(image_size, channels, stem) -> nn.Module`` with an integer ``feature_dim``.
        default_shape: (channels, image size) used when none is given (Python use without a data set).
        torchvision: the torchvision model whose ``state_dict`` (without its classifier) the backbone's
            equals, or ``None`` for vprob's own networks.
        stems: the ``--stem`` values it takes (empty: none).
        description: one line for the README table and ``--help``.
    """

    name: str
    build: Builder
    default_shape: tuple[int, int] = (3, 32)
    torchvision: str | None = None
    stems: tuple[str, ...] = ()
    description: str = ""


def default_stem(image_size: int) -> str:
    """``"cifar"`` for images up to 64 px, ``"imagenet"`` above."""
    return "cifar" if image_size <= CIFAR_STEM_MAX_SIZE else "imagenet"


def _resnet(depth: int, fixed_stem: str | None = None) -> Builder:
    def build(image_size: int, channels: int, stem: str | None) -> nn.Module:
        import torchvision.models as tvm

        stem = stem or fixed_stem or default_stem(image_size)
        model = getattr(tvm, f"resnet{depth}")(weights=None)
        feature_dim = model.fc.in_features
        if stem == "cifar":
            model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
            model.maxpool = nn.Identity()
        elif channels != 3:
            model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.fc = nn.Identity()
        model.feature_dim = feature_dim
        return model

    return build


def vit_patch_size(image_size: int) -> int:
    """The smallest divisor p of ``image_size`` with at most 14 patches per side (4 at 32 px, 8 at 64 and
    96 px, 16 at 224 px, 1 at 8 px)."""
    for patch in range(1, image_size + 1):
        if image_size % patch == 0 and image_size // patch <= VIT_MAX_PATCHES_PER_SIDE:
            return patch
    raise ValueError(f"image_size must be a positive integer, got {image_size!r}")


def _vit_small(image_size: int, channels: int, stem: str | None) -> nn.Module:
    from torchvision.models import VisionTransformer

    patch = vit_patch_size(image_size)
    model = VisionTransformer(
        image_size=image_size, patch_size=patch, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536
    )
    if channels != 3:  # torchvision's patch embedding takes RGB only; same key and initialization
        model.conv_proj = nn.Conv2d(channels, 384, kernel_size=patch, stride=patch)
        fan_in = channels * patch * patch
        nn.init.trunc_normal_(model.conv_proj.weight, std=(1.0 / fan_in) ** 0.5)
        nn.init.zeros_(model.conv_proj.bias)
    model.heads = nn.Identity()
    model.feature_dim = 384
    return model


def _digits_convnet(image_size: int, channels: int, stem: str | None) -> nn.Module:
    if image_size != 8:
        raise ValueError(
            f"backbone digits_convnet takes 8x8 images, the data has {image_size} px: choose "
            f"another --backbone ({', '.join(n for n in BACKBONES if n != 'digits_convnet')})"
        )
    return DigitsConvNet(in_channels=channels)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "resnet18",
            _resnet(18),
            torchvision="resnet18",
            stems=STEMS,
            description="torchvision ResNet-18, 512 features",
        ),
        BackboneSpec(
            "resnet34",
            _resnet(34),
            torchvision="resnet34",
            stems=STEMS,
            description="torchvision ResNet-34, 512 features",
        ),
        BackboneSpec(
            "resnet50",
            _resnet(50),
            torchvision="resnet50",
            stems=STEMS,
            description="torchvision ResNet-50, 2048 features",
        ),
        BackboneSpec(
            "resnet18_cifar",
            _resnet(18, fixed_stem="cifar"),
            torchvision="resnet18",
            stems=("cifar",),
            description="resnet18 with the CIFAR stem (the name of older runs)",
        ),
        BackboneSpec(
            "vit_small",
            _vit_small,
            torchvision="vit",
            description="torchvision VisionTransformer, ViT-S shape (12 x 6 heads x 384), 384 features",
        ),
        BackboneSpec(
            "digits_convnet",
            _digits_convnet,
            default_shape=(1, 8),
            description="small conv net for 8x8 digits, 128 features",
        ),
    )
}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry (its name must be new). The engine's ``backbone`` option accepts it
    from Python; the ``--backbone`` choices of the command line are those registered at import."""
    if not isinstance(spec, BackboneSpec):
        raise TypeError(f"register_backbone needs a BackboneSpec, got {type(spec).__name__}")
    if not spec.name.isidentifier() or spec.name in BACKBONES:
        raise ValueError(
            f"backbone name must be a new identifier, got {spec.name!r} (taken: {sorted(BACKBONES)})"
        )
    BACKBONES[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    """The registered backbone ``name``; ValueError listing the registered names otherwise."""
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}") from None


def check_stem(backbone: str, stem: str | None) -> None:
    """ValueError unless ``stem`` is ``None`` or a stem that ``backbone`` takes."""
    spec = get_backbone(backbone)
    if stem is not None and stem not in spec.stems:
        takes = f"takes {', '.join(spec.stems)}" if spec.stems else "has no stem option"
        raise ValueError(f"stem {stem!r} does not apply to backbone {backbone!r}, which {takes}")


def make_backbone(
    name: str, image_size: int | None = None, channels: int | None = None, stem: str | None = None
) -> nn.Module:
    """Backbone ``name`` for images of ``channels`` x ``image_size`` x ``image_size`` (default: the
    backbone's :attr:`BackboneSpec.default_shape`): (N, C, H, W) -> (N, feature_dim)."""
    spec = get_backbone(name)
    check_stem(name, stem)
    default_channels, default_size = spec.default_shape
    image_size = default_size if image_size is None else image_size
    channels = default_channels if channels is None else channels
    for label, value in (("image_size", image_size), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return spec.build(image_size, channels, stem)


__all__ = [
    "BACKBONES",
    "STEMS",
    "BackboneSpec",
    "check_stem",
    "default_stem",
    "get_backbone",
    "make_backbone",
    "register_backbone",
    "vit_patch_size",
]
