"""Encoders and heads: shapes, the CIFAR stem, and the registry."""

import pytest
import torch
from torch import nn

from vprob.backbones import make_backbone
from vprob.nets import DigitsConvNet, MLPHead, resnet18_cifar


def test_resnet18_cifar_stem_and_features():
    net = resnet18_cifar()
    assert net.feature_dim == 512
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and net.conv1.padding == (1, 1)
    assert isinstance(net.maxpool, nn.Identity) and isinstance(net.fc, nn.Identity)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    # The CIFAR stem keeps a 4x4 map before pooling (no stride-2 conv1 and no max-pool).
    shapes = []
    net.layer4.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    with torch.no_grad():
        net(torch.randn(1, 3, 32, 32))
    assert shapes[0] == (1, 512, 4, 4)


def test_digits_convnet():
    net = DigitsConvNet()
    assert net.feature_dim == 128
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.randn(16, 1, 8, 8)
    out = net(x)
    assert out.shape == (16, 128) and (out >= 0).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert DigitsConvNet(feature_dim=32)(x).shape == (16, 32)
    with pytest.raises(ValueError, match="8x8"):
        net(torch.randn(2, 1, 16, 16))


def test_mlp_head():
    head = MLPHead(512, 2048, 128)
    assert head(torch.randn(4, 512)).shape == (4, 128)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head.net[0].bias is None and head.net[-1].bias is not None
    plain = MLPHead(16, 32, 8, num_layers=3, batch_norm=False)
    assert [type(m) for m in plain.net] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert plain(torch.randn(3, 16)).shape == (3, 8)
    linear = MLPHead(16, 32, 8, num_layers=1)
    assert [type(m) for m in linear.net] == [nn.Linear] and linear.net[0].in_features == 16
    with pytest.raises(ValueError, match="num_layers"):
        MLPHead(16, 32, 8, num_layers=0)


def test_make_backbone():
    with torch.device("meta"):  # structure only: no weights are initialized
        assert make_backbone("resnet18_cifar").feature_dim == 512
    net = make_backbone("digits_convnet")
    assert isinstance(net, DigitsConvNet) and net.feature_dim == 128
    with pytest.raises(ValueError, match="valid names: resnet18, resnet34, resnet50, resnet18_cifar"):
        make_backbone("vit")
