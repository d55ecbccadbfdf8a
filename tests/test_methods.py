"""The method registry: declarations, wiring to the losses, and a method added from outside in one place.

The wiring tests compare each method's objective with the loss function called directly with the method's
own (non-default) options, so a swapped or dropped option (CCT's t+ and t-, ProjNCE's chunk size or beta, a
changed default temperature) fails here.
"""

import pytest
import torch
import torch.nn.functional as F
from _digits import two_views
from torch import Tensor, nn

from vprob.cli import build_parser, main
from vprob.config import make_config
from vprob.losses import cct, info_nce, proj_nce, supcon
from vprob.methods import METHODS, Capabilities, PointEmbedding, get_method, methods_with, register_method
from vprob.methods.base import DIM, HEAD_HIDDEN
from vprob.nets import DigitsConvNet
from vprob.options import Option
from vprob.train import train


def test_every_method_declares_valid_options_and_capabilities():
    assert set(METHODS) == {"simclr", "vsimclr", "supcon", "vsupcon", "projnce", "cct", "vje"}
    for name, method in METHODS.items():
        assert method.name == name and method.summary
        names = method.option_names()
        assert len(set(names)) == len(names), name
        for option in method.options:
            option.validate(option.default, name)  # every default passes its own check
        fixed = method.capabilities.num_views
        assert (fixed is None) == ("num_views" in names), name
    assert set(methods_with(variational=True)) == {"vsimclr", "vsupcon", "vje"}
    assert set(methods_with(needs_labels=True)) == {"supcon", "vsupcon", "projnce"}
    assert set(methods_with(distributed=True)) == {"simclr", "supcon", "projnce", "vsimclr", "vsupcon"}
    assert methods_with(anomaly=True) == ("vje",)


def _views_and_labels(digits, num_views=2):
    x1, x2, labels = two_views(digits, batch=32)
    views = torch.stack([x1, x2] + [x1.flip(-1)] * (num_views - 2))
    return views, labels


def _embeddings(model: nn.Module, views: Tensor) -> Tensor:
    return model(views.flatten(0, 1)).view(*views.shape[:2], -1)


@pytest.mark.parametrize(
    "name, options, loss",
    [
        ("simclr", dict(tau=0.37, num_views=3), lambda z, y: info_nce(z, tau=0.37)),
        ("supcon", dict(tau=0.21), lambda z, y: supcon(z, y, tau=0.21)),
        (
            "projnce",
            dict(tau=0.3, projection="median", beta=2.5, chunk_size=5),
            lambda z, y: proj_nce(z, y, tau=0.3, projection="median", beta=2.5, chunk_size=0),
        ),
        ("cct", dict(t_pos=1.7, t_neg=0.3, num_views=3), lambda z, y: cct(z, t_pos=1.7, t_neg=0.3)),
    ],
)
def test_a_point_method_minimizes_its_loss_with_its_own_options(digits, name, options, loss):
    torch.manual_seed(0)
    model = get_method(name).from_options(DigitsConvNet(), {"dim": 8, **options}).double()
    views, labels = _views_and_labels(digits, model.num_views)
    views = views.double()
    model.eval()  # BatchNorm in eval mode: the two evaluations below see the same statistics
    value, stats = model.training_loss(views, labels)
    z = _embeddings(model, views)
    torch.testing.assert_close(value, loss(z, labels), rtol=1e-10, atol=1e-12)
    assert stats["contrastive"] == value.detach()


def test_cct_keeps_its_temperatures_apart(digits):
    """Swapping t+ and t- changes the objective (a swapped wiring would go unnoticed with t+ = t-)."""
    model = get_method("cct").from_options(DigitsConvNet(), {"dim": 8, "t_pos": 1.7, "t_neg": 0.3}).eval()
    views, labels = _views_and_labels(digits)
    z = _embeddings(model, views)
    value, _ = model.training_loss(views, labels)
    assert not torch.allclose(value, cct(z, t_pos=0.3, t_neg=1.7))


def test_defaults_come_from_the_data_set_then_the_method():
    config = make_config(method="simclr", data="digits").resolved()
    # The digits record sets tau 0.2, d 32, a 256-wide head; chunk_size is SimCLR's own default.
    assert config.options == {"dim": 32, "head_hidden": 256, "tau": 0.2, "num_views": 2, "chunk_size": None}
    assert make_config(method="simclr", tau=0.5).resolved().options["tau"] == 0.5
    cct_options = make_config(method="cct").resolved().options
    assert "tau" not in cct_options and (cct_options["t_pos"], cct_options["t_neg"]) == (1.0, 0.9)
    assert make_config(method="vje").resolved().options["df"] == 5.0


def test_inapplicable_and_invalid_options_are_refused_naming_the_method():
    with pytest.raises(ValueError, match="t_pos do not apply to method 'simclr'; its options are: dim"):
        make_config(method="simclr", t_pos=1.0).resolved()
    with pytest.raises(ValueError, match=r"tau \(method vsimclr\) must be > 0"):
        make_config(method="vsimclr", tau=0.0).resolved()
    with pytest.raises(ValueError, match=r"dim \(method supcon\) must be >= 2"):
        make_config(method="supcon", dim=1).resolved()


def test_the_command_line_refuses_an_option_of_another_method(capsys):
    assert main(["train", "--method", "simclr", "--t-pos", "1.0", "--device", "cpu", "--max-steps", "1"]) == 2
    assert "t_pos do not apply to method 'simclr'" in capsys.readouterr().err


def test_every_default_can_be_set_from_the_command_line():
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in (
        "--backbone",
        "--head-hidden",
        "--chunk-size",
        "--detach-weights",
        "--log-every",
        "--knn-k",
        "--df",
        "--radial-weight",
        "--channels-last",
        "--amp",
    ):
        assert flag in text, flag


class AlignUniform(PointEmbedding):
    """A method defined outside vprob: alignment + uniformity (Wang and Isola, 2020)."""

    name = "alignuniform"
    summary = "alignment and uniformity on the sphere (Wang and Isola 2020)"
    capabilities = Capabilities()
    options = (
        DIM,
        HEAD_HIDDEN,
        Option("t", float, 2.0, "uniformity temperature", check=lambda v: v > 0, requirement="> 0"),
    )

    def __init__(self, encoder, dim=128, head_hidden=None, t=2.0):
        super().__init__(encoder, dim, head_hidden)
        self.t = t

    def contrastive(self, z, labels):
        align = (z[0] - z[1]).square().sum(-1).mean()
        flat = F.normalize(z.flatten(0, 1), dim=-1)
        uniform = torch.pdist(flat).square().mul(-self.t).exp().mean().log()
        return align + uniform


@pytest.fixture
def registered():
    register_method(AlignUniform)
    yield AlignUniform
    del METHODS[AlignUniform.name]


def test_a_method_added_in_one_place_trains_evaluates_and_is_offered(registered, tmp_path, capsys):
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "alignuniform" in help_text and "--t T" in help_text
    results = train(
        make_config(
            method="alignuniform",
            t=3.0,
            device="cpu",
            max_steps=3,
            batch_size=64,
            dim=8,
            run_dir=str(tmp_path / "api"),
        ),
        progress=False,
    )
    assert 0.0 <= results["knn_top1_k10_majority"] <= 1.0 and results["steps"] == 3
    code = main(
        [
            "train",
            "--method",
            "alignuniform",
            "--t",
            "0.5",
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--batch-size",
            "64",
            "--dim",
            "8",
            "--run-dir",
            str(tmp_path / "cli"),
            "--no-progress",
        ]
    )
    assert code == 0 and "linear_top1" in capsys.readouterr().out
    with pytest.raises(ValueError, match="new identifier"):
        register_method(AlignUniform)


def test_register_method_refuses_what_is_not_a_method():
    with pytest.raises(TypeError, match="subclass of vprob.methods.Method"):
        register_method(nn.Linear)


def test_a_run_saved_before_the_registries_still_reads(tmp_path):
    """config.json of the H100 runs of 2026-11-22 (the flat layout: method options at the top, VJE's with a
    vje_ prefix, options of other methods present) gives the same run; a checkpoint of that layout loads."""
    import json
    from pathlib import Path

    import torch

    from vprob.checkpoint import save_checkpoint
    from vprob.config import build_model, config_from_dict
    from vprob.runs import load_run

    saved = json.loads(
        (Path(__file__).parents[1] / "benchmarks/results/h100-2026-11-22/vsimclr/config.json").read_text()
    )
    config = config_from_dict(saved).resolved()
    assert (config.method, config.lr, config.batch_size) == ("vsimclr", 0.06, 512)
    assert config.options == {
        "dim": 128,
        "head_hidden": 1024,
        "tau": 0.5,
        "posterior": "projected_normal",
        "kl": "bound",
        "beta": 1.0,
        "kl_reference_tau": None,
        "chunk_size": None,
    }
    # An old digits checkpoint: flat config, the same state_dict keys as today's model.
    legacy = {
        **saved,
        "data": "digits",
        "data_dir": None,
        "dim": 8,
        "head_hidden": 16,
        "backbone": "digits_convnet",
        "tau": 0.2,
    }
    model = build_model(config_from_dict(legacy).resolved())
    save_checkpoint(tmp_path / "checkpoint.pt", {"config": legacy, "model": model.state_dict(), "step": 3})
    run = load_run(tmp_path, "cpu")
    assert run.step == 3 and run.config.options["dim"] == 8
    for name, value in model.state_dict().items():
        assert torch.equal(run.model.state_dict()[name], value)
