"""The backbone registry and any user's encoder: stems, channels, torchvision's keys, the dry pass that finds
an encoder's width, and a plain ``nn.Sequential`` trained by every method and by stock Pyro SVI."""

from __future__ import annotations

import pyro
import pytest
import torch
import torchvision
from _digits import two_views
from torch import nn

from vprob.backbones import BACKBONES, check_stem, make_backbone, vit_patch_size
from vprob.config import build_model, make_config
from vprob.methods import METHODS
from vprob.models.vcl import VCL
from vprob.nets import feature_dim_of


def _keys_and_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("depth, width", [(18, 512), (34, 512), (50, 2048)])
def test_resnets_have_torchvision_keys_and_the_stem_of_the_image_size(depth, width):
    with torch.device("meta"):  # structure only
        reference = getattr(torchvision.models, f"resnet{depth}")()
        small = make_backbone(f"resnet{depth}", image_size=32, channels=3)
        large = make_backbone(f"resnet{depth}", image_size=96, channels=3)
        forced = make_backbone(f"resnet{depth}", image_size=32, channels=3, stem="imagenet")
        gray = make_backbone(f"resnet{depth}", image_size=32, channels=1)
    expected = {k: s for k, s in _keys_and_shapes(reference).items() if not k.startswith("fc.")}
    # The ImageNet stem is torchvision's model without fc, key for key and shape for shape.
    assert _keys_and_shapes(large) == expected and _keys_and_shapes(forced) == expected
    assert small.feature_dim == large.feature_dim == width
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity) and isinstance(small.fc, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)
    # Only conv1 differs with the CIFAR stem; channels come from the data.
    assert _keys_and_shapes(small) == {**expected, "conv1.weight": (64, 3, 3, 3)}
    assert gray.conv1.in_channels == 1


def test_resnet18_cifar_is_resnet18_with_the_cifar_stem_and_the_old_weights():
    """Old runs name resnet18_cifar: same keys and, from the same seed, the same weights as the code that
    built it before the registry (torchvision resnet18, conv1 replaced, max-pool removed)."""
    torch.manual_seed(5)
    old = torchvision.models.resnet18(weights=None)
    old.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(old.conv1.weight, mode="fan_out", nonlinearity="relu")
    old.fc = nn.Identity()
    torch.manual_seed(5)
    new = make_backbone("resnet18_cifar")
    torch.manual_seed(5)
    by_stem = make_backbone("resnet18", image_size=32)
    for module in (new, by_stem):
        state = module.state_dict()
        assert state.keys() == old.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in old.state_dict().items())


def test_vit_small_is_torchvisions_vision_transformer():
    assert [vit_patch_size(s) for s in (8, 32, 64, 96, 224)] == [1, 4, 8, 8, 16]
    assert all(s % vit_patch_size(s) == 0 for s in range(1, 300))
    with torch.device("meta"):
        reference = torchvision.models.VisionTransformer(32, 4, 12, 6, 384, 1536)
        vit = make_backbone("vit_small", image_size=32, channels=3)
        gray = make_backbone("vit_small", image_size=8, channels=1)
    expected = {k: s for k, s in _keys_and_shapes(reference).items() if not k.startswith("heads.")}
    assert _keys_and_shapes(vit) == expected and vit.feature_dim == 384
    assert gray.conv_proj.in_channels == 1 and gray.patch_size == 1
    out = make_backbone("vit_small", image_size=8, channels=1).eval()(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 384)


def test_stems_and_sizes_that_do_not_apply_are_refused():
    with pytest.raises(ValueError, match="does not apply to backbone 'digits_convnet'"):
        check_stem("digits_convnet", "cifar")
    with pytest.raises(ValueError, match="vit_small"):
        make_backbone("vit_small", stem="imagenet")
    with pytest.raises(ValueError, match="which takes cifar"):
        make_backbone("resnet18_cifar", stem="imagenet")
    with pytest.raises(ValueError, match="8x8"):
        make_backbone("digits_convnet", image_size=32)
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        make_backbone("resnet18", channels=0)
    with pytest.raises(ValueError, match="does not apply"):
        make_config(stem="imagenet").resolved()  # digits: digits_convnet
    with pytest.raises(ValueError, match="registered backbone"):
        make_config(backbone="resnet9").resolved()
    assert set(BACKBONES) >= {
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet18_cifar",
        "vit_small",
        "digits_convnet",
    }


def test_build_model_builds_the_backbone_for_the_data_shape():
    config = make_config(method="simclr", backbone="resnet18", dim=8).resolved()
    with torch.device("meta"):
        model = build_model(config, image_shape=(1, 8, 8))
    assert model.encoder.conv1.in_channels == 1 and isinstance(model.encoder.maxpool, nn.Identity)


# --------------------------------------------------------------------------------------------------------
# A user's own encoder


def test_feature_dim_of_finds_the_width_by_a_dry_pass_without_side_effects():
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU())
    assert feature_dim_of(flat) == 128  # Linear(64, ...) read as 1 x 8 x 8
    conv = nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.BatchNorm2d(16),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 24),
    )
    conv.train()
    running = conv[1].running_mean.clone()
    rng = torch.get_rng_state()
    assert feature_dim_of(conv) == 24
    assert torch.equal(torch.get_rng_state(), rng)  # zeros in, eval mode: no random numbers drawn
    assert torch.equal(conv[1].running_mean, running) and conv[1].num_batches_tracked == 0
    assert all(m.training for m in conv.modules())
    assert feature_dim_of(conv, feature_dim=7) == 7  # given: trusted as is
    assert feature_dim_of(nn.Sequential(nn.Flatten(), nn.Linear(48, 5)), image_shape=(3, 4, 4)) == 5
    fixed = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())  # 4 x 6 x 6 for 8 px inputs only
    assert feature_dim_of(fixed, image_shape=(1, 8, 8)) == 144


def test_feature_dim_of_refuses_clearly():
    with pytest.raises(ValueError, match="end it with pooling"):
        feature_dim_of(nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match="lazy"):
        feature_dim_of(nn.Sequential(nn.Flatten(), nn.LazyLinear(8)))
    with pytest.raises(ValueError, match="pass feature_dim="):
        feature_dim_of(nn.Sequential(nn.Flatten(), nn.Linear(50, 8)))  # 50 is no 1- or 3-channel square
    with pytest.raises(ValueError, match="feature_dim must be a positive integer"):
        feature_dim_of(nn.Linear(4, 4), feature_dim=0)
    with pytest.raises(TypeError, match="nn.Module"):
        feature_dim_of(lambda x: x)


def _user_encoder() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_a_users_encoder_without_attributes(digits, name):
    method = METHODS[name]
    options = {"dim": 8} if "dim" in method.option_names() else {}
    model = method.from_options(_user_encoder(), options)
    x1, x2, labels = two_views(digits, batch=32)
    views = torch.stack([x1, x2] + ([x1] if method.capabilities.num_views not in (None, 2) else []))
    loss, _ = model.objective()(views, labels)
    loss.backward()
    assert torch.isfinite(loss) and model.encoder[1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kl", ["bound", "exact"])
@pytest.mark.parametrize("supervised", [False, True])
def test_vcl_with_a_plain_sequential_trains_with_stock_pyro_svi(digits, kl, supervised):
    pyro.clear_param_store()
    torch.manual_seed(0)
    vcl = VCL(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU()), 16, supervised=supervised, kl=kl, tau=0.2
    )
    assert vcl.head.in_dim == 128
    x1, x2, labels = two_views(digits, batch=64)
    svi = pyro.infer.SVI(vcl.model, vcl.guide, pyro.optim.Adam({"lr": 3e-3}), pyro.infer.Trace_ELBO())
    before = vcl.encoder[1].weight.detach().clone()
    losses = [svi.step(x1, x2, labels if supervised else None) for _ in range(30)]
    # pyro.module registered the encoder's real parameters, and Pyro's optimizer moved them.
    assert "vcl$$$encoder.1.weight" in pyro.get_param_store().keys()
    assert not torch.equal(vcl.encoder[1].weight, before)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < sum(losses[:5])
    pyro.clear_param_store()
