"""The engine's step and its bookkeeping (vprob.engine.step), on a hand-sized model whose every number is
known: what a step updates and with which gradient, the stats it returns, its autocast and validation
switches, skipping non-finite steps, the mean over processes in a fake world, and the report of the first
non-finite step. Written for #19 (mutation testing found these unpinned by the end-to-end training tests)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from vprob.checkpoint import CheckpointError as CheckpointErrorType
from vprob.engine import step as step_module
from vprob.engine.step import NonFiniteLossError, NonFiniteTracker, TrainStep
from vprob.losses import info_nce

LR = 0.1


class _Two(nn.Module):
    """Two scalar parameters: a (used by every objective here) and b (used only when asked)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.0))
        self.b = nn.Parameter(torch.tensor(2.0))


def _objective(model: _Two, use_b: bool = True, seen: list | None = None):
    """loss = 3 a^2 (+ b^2 when use_b) with the part ``square_a`` = a^2; ``seen`` records the switches
    in force while it runs."""

    def objective(views, labels):
        if seen is not None:
            seen.append(
                dict(
                    autocast=torch.is_autocast_enabled("cpu"),
                    dtype=torch.get_autocast_dtype("cpu"),
                    pyro=dist.is_validation_enabled(),
                    labels=labels,
                )
            )
        loss = 3 * model.a**2 + (model.b**2 if use_b else 0)
        return loss, {"square_a": (model.a**2).detach()}

    return objective


def _step(model, objective, momentum=0.0, world_size=1, skip=False, amp=False):
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5**i)
    return TrainStep(model, objective, optimizer, scheduler, amp, world_size=world_size, skip_nonfinite=skip)


def test_a_step_takes_the_objectives_gradient_and_reports_loss_parts_and_norm():
    """d/da 3a^2 = 6a = 6, d/db b^2 = 2b = 4: SGD moves a to 1 - 0.6 and b to 2 - 0.4; the gradient norm is
    |(6, 4)| = sqrt(52); the scheduler steps once (lr halves)."""
    model = _Two()
    train_step = _step(model, _objective(model))
    stats = train_step(torch.zeros(2, 3), torch.tensor([0, 1]))
    assert list(stats) == ["loss", "square_a", "grad_norm"]
    assert stats["loss"].item() == 7.0 and stats["square_a"].item() == 1.0
    assert stats["grad_norm"].item() == pytest.approx(52**0.5, rel=1e-6)
    assert not any(value.requires_grad for value in stats.values())
    assert model.a.item() == pytest.approx(0.4) and model.b.item() == pytest.approx(1.6)
    assert train_step.optimizer.param_groups[0]["lr"] == pytest.approx(LR / 2)


def test_gradients_do_not_accumulate_and_unused_parameters_are_left_alone():
    """Gradients are cleared to None before each backward: a second step that does not use b leaves b (and its
    momentum) untouched, and its gradient norm is a's alone."""
    model = _Two()
    step_one = _step(model, _objective(model), momentum=0.9)
    step_one(torch.zeros(1), None)
    b_after_one = model.b.item()
    step_two = TrainStep(
        model, _objective(model, use_b=False), step_one.optimizer, step_one.scheduler, amp=False
    )
    stats = step_two(torch.zeros(1), None)
    assert model.b.item() == b_after_one and model.b.grad is None
    assert stats["grad_norm"].item() == pytest.approx(abs(6 * 0.4), rel=1e-6)
    # a: momentum buffer 6 -> 0.9 * 6 + 2.4 = 7.8 at lr 0.05.
    assert model.a.item() == pytest.approx(0.4 - 0.05 * 7.8, rel=1e-6)


def test_autocast_follows_amp_and_validation_is_off_inside_the_objective():
    """The objective runs under bfloat16 autocast exactly when amp is on, with Pyro's argument validation and
    the losses' non-finite checks off (a Normal with a negative scale and a NaN embedding do not raise)."""
    z = torch.randn(2, 4, 3)
    z[0, 0, 0] = float("nan")
    for amp in (False, True):
        model = _Two()
        seen = []
        inner = _objective(model, seen=seen)

        def objective(views, labels, inner=inner):
            dist.Normal(torch.tensor(0.0), torch.tensor(-1.0))
            loss, stats = inner(views, labels)
            return loss + 0 * info_nce(z).nan_to_num(), stats

        labels = torch.tensor([3, 4])
        default_dtype = torch.get_autocast_dtype("cpu")
        torch.set_autocast_dtype("cpu", torch.float16)  # bfloat16 must be asked for, not the default
        try:
            with pyro.validation_enabled(True):
                _step(model, objective, amp=amp)(torch.zeros(2), labels)
                assert dist.is_validation_enabled()
        finally:
            torch.set_autocast_dtype("cpu", default_dtype)
        (record,) = seen
        assert record["autocast"] is amp and record["pyro"] is False and record["labels"] is labels
        if amp:
            assert record["dtype"] == torch.bfloat16
    with pytest.raises(ValueError):
        info_nce(z)  # the checks are back on after the step


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")
def test_non_finite_steps_are_skipped_only_when_asked():
    """A NaN loss, or a finite loss with an infinite gradient (sqrt at 0): with skip_nonfinite the update is
    skipped (``skipped`` = 1.0, parameters unchanged) but the scheduler still steps; without it the
    optimizer steps as usual."""
    for make_loss in (lambda m: m.a * float("nan"), lambda m: torch.sqrt(m.a - 1)):

        def objective_of(model, make_loss=make_loss):
            return lambda views, labels: (make_loss(model), {})

        model = _Two()
        train_step = _step(model, objective_of(model), skip=True)
        stats = train_step(torch.zeros(1), None)
        assert stats["skipped"].item() == 1.0 and stats["skipped"].dtype == torch.float32
        assert stats["skipped"].shape == ()
        assert model.a.item() == 1.0
        assert train_step.optimizer.param_groups[0]["lr"] == pytest.approx(LR / 2)
        model = _Two()
        stats = _step(model, objective_of(model), skip=False)(torch.zeros(1), None)
        assert "skipped" not in stats and not torch.isfinite(model.a)
    model = _Two()
    assert "skipped" not in _step(model, _objective(model), skip=True)(torch.zeros(1), None)
    assert model.a.item() == pytest.approx(0.4)


def test_defaults_one_process_and_no_skipping(monkeypatch):
    """Built without ``world_size`` and ``skip_nonfinite``: the stats are not reduced over processes and a
    NaN step is taken, not skipped."""
    reduced = []
    monkeypatch.setattr(step_module.distributed, "all_reduce_mean_", lambda tensors: reduced.append(tensors))
    model = _Two()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    nan = TrainStep(
        model, lambda views, labels: (model.a * float("nan"), {}), optimizer, scheduler, amp=False
    )
    stats = nan(torch.zeros(1), None)
    assert "skipped" not in stats and not torch.isfinite(model.a) and len(reduced) == 1


def test_gradients_and_stats_are_averaged_over_processes(monkeypatch):
    """A fake world of two whose other process has all-zero gradients and stats: the mean halves the gradient
    (so the update and the norm) and every stat, stacked into one float32 collective."""
    calls = []

    def half(tensors):
        calls.append([t.clone() for t in tensors])
        for t in tensors:
            t.mul_(0.5)

    monkeypatch.setattr(step_module.distributed, "all_reduce_mean_", half)
    model = _Two()
    stats = _step(model, _objective(model), world_size=2)(torch.zeros(1), None)
    grads, values = calls
    assert [g.item() for g in grads] == [6.0, 4.0]
    assert values[0].dtype == torch.float32 and values[0].tolist() == [7.0, 1.0]
    assert stats["loss"].item() == 3.5 and stats["square_a"].item() == 0.5
    assert stats["grad_norm"].item() == pytest.approx(52**0.5 / 2, rel=1e-6)
    assert model.a.item() == pytest.approx(1 - LR * 3) and list(stats) == ["loss", "square_a", "grad_norm"]
    # One process: the stats are not reduced (only the gradients' call, a no-op there).
    calls.clear()
    model = _Two()
    _step(model, _objective(model), world_size=1)(torch.zeros(1), None)
    assert len(calls) == 1


def test_tracker_names_the_first_bad_step_and_its_values():
    tracker = NonFiniteTracker()
    tracker.raise_if_any("unused")  # nothing recorded yet
    finite = {
        "loss": torch.tensor(1.0),
        "kl": torch.tensor([0.5, 0.25]),
        "skipped": torch.tensor(float("nan")),
    }
    tracker.record(1, finite)
    tracker.raise_if_any("unused")  # ``skipped`` is not a value to check
    tracker.record(5, {"loss": torch.tensor(2.0), "kl": torch.tensor([0.0, float("inf")]), "skipped": 1})
    tracker.record(6, {"loss": torch.tensor(float("nan")), "kl": torch.tensor([0.0, 0.0]), "skipped": 1})
    with pytest.raises(NonFiniteLossError) as info:
        tracker.raise_if_any("run/checkpoint.pt")
    assert str(info.value) == (
        "non-finite value at step 5 in kl; the last good checkpoint (run/checkpoint.pt) is left untouched. "
        "Lower the learning rate, or pass --skip-nonfinite to skip such steps."
    )
    both = NonFiniteTracker()
    both.record(9, {"loss": torch.tensor(float("-inf")), "kl": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteLossError, match=r"^non-finite value at step 9 in loss, kl; "):
        both.raise_if_any("x")


# ------------------------------------------------------------------------------------------------ loader


def _digits():
    from vprob.data import load_digits

    return load_digits()


def test_class_index_check_and_one_class_subset():
    from vprob.engine.loader import check_class_index, one_class_subset

    classes = ("a", "b", "c")
    for good in (0, 2):
        check_class_index(good, classes)
    for bad in (-1, 3, True, 1.0, "1"):
        with pytest.raises(ValueError) as info:
            check_class_index(bad, classes)
        assert (
            str(info.value) == f"normal class {bad!r} does not exist: valid class indices are 0..2 (a, b, c)"
        )
    train, _ = _digits()
    subset = one_class_subset(train, 3)
    assert len(subset) == int((train.labels == 3).sum()) > 0 and bool((subset.labels == 3).all())
    assert torch.equal(subset.images, train.images[train.labels == 3])
    with pytest.raises(ValueError, match="^normal class 10 does not exist"):
        one_class_subset(train, 10)


def test_training_data_uses_the_labelled_images_only_for_methods_that_need_labels(monkeypatch):
    """An unlabelled half (label -1): self-supervised training takes all images, a method that needs labels
    the labelled ones; evaluation always fits on the labelled ones; the device and load options reach the
    loader; ``normal_class`` keeps that class only."""
    from vprob.data import ImageSet
    from vprob.engine import loader

    train, test = _digits()
    labels = train.labels.clone()
    labels[::2] = -1
    mixed = ImageSet(train.images, labels, train.classes, train.mean, train.std, unlabelled=True)
    calls = []

    def load_dataset(name, data_dir, device, **options):
        calls.append((name, data_dir, device, options))
        return mixed, test

    monkeypatch.setattr(loader, "load_dataset", load_dataset)
    everything = loader.training_data("digits", "somewhere", torch.device("cpu"), False, image_size=8)
    assert calls == [("digits", "somewhere", torch.device("cpu"), {"image_size": 8})]
    assert everything.train is mixed and everything.test is test
    assert len(everything.evaluation.train) == len(mixed) - len(mixed) // 2 - len(mixed) % 2
    assert bool((everything.evaluation.train.labels >= 0).all())
    labelled = loader.training_data("digits", None, torch.device("cpu"), True)
    assert torch.equal(labelled.train.labels, everything.evaluation.train.labels)
    one = loader.training_data("digits", None, torch.device("cpu"), True, normal_class=4)
    assert bool((one.train.labels == 4).all()) and len(one.train) == int((labels == 4).sum())
    assert len(one.evaluation.train) == len(everything.evaluation.train)  # evaluation keeps every class


def test_device_loader_batches_shares_and_resume():
    """Each epoch is one permutation cut into full batches (the last incomplete one dropped); two processes'
    contiguous shares of each batch are the single-process batch; resuming at step k of an epoch gives the
    same epoch's batches from k."""
    from vprob.data import ImageSet
    from vprob.engine.loader import DeviceLoader

    n = 23
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    image_set = ImageSet(images, torch.arange(n) % 3, ("a", "b", "c"), (0.5,), (0.25,))

    def batches(world_size=1, rank=0, first_step=0, seed=0):
        gen = torch.Generator().manual_seed(seed)
        data = DeviceLoader(image_set, 6, gen, world_size=world_size, rank=rank)
        return data, [(x[:, 0, 0, 0].long(), y) for x, y in data.epoch(first_step)]

    data, single = batches()
    assert data.steps_per_epoch == 3 and len(single) == 3
    seen = torch.cat([x for x, _ in single])
    assert len(set(seen.tolist())) == 18 and all(torch.equal(y, x % 3) for x, y in single)
    assert (
        len({tuple(x.tolist()) for x, _ in batches(seed=1)[1]} & {tuple(x.tolist()) for x, _ in single}) == 0
    )
    for rank in (0, 1):
        _, shares = batches(world_size=2, rank=rank)
        for (x, y), (whole, whole_y) in zip(shares, single, strict=True):
            assert torch.equal(x, whole[3 * rank : 3 * rank + 3]) and torch.equal(
                y, whole_y[3 * rank : 3 * rank + 3]
            )
    _, resumed = batches(first_step=2)
    assert len(resumed) == 1 and torch.equal(resumed[0][0], single[2][0])
    gen = torch.Generator().manual_seed(0)
    data = DeviceLoader(image_set, 6, gen)
    first, second = [torch.cat([x for x, _ in data.epoch()]) for _ in range(2)]
    assert not torch.equal(first, second)  # the generator moves on: a new permutation each epoch
    for size, world, message in (
        (24, 1, "batch_size 24 exceeds the 23 training images"),
        (6, 4, "batch_size 6 (global) must be divisible by the 4 processes"),
    ):
        with pytest.raises(ValueError) as info:
            DeviceLoader(image_set, size, gen, world_size=world)
        assert str(info.value) == message
    DeviceLoader(image_set, 23, gen)  # the whole set is one batch
    # Defaults: rank 0, and an epoch from its first step.
    shares = list(DeviceLoader(image_set, 6, torch.Generator().manual_seed(0), world_size=2).epoch())
    assert len(shares) == 3
    for (x, _), (whole, _) in zip(shares, single, strict=True):
        assert torch.equal(x[:, 0, 0, 0].long(), whole[:3])


def test_view_maker_shares_are_the_single_process_views():
    """Every process draws the parameters of the whole global batch and keeps its own rows: two processes'
    views of their halves are the single process's views of the whole batch, view by view."""
    from vprob.data import augmentation_for
    from vprob.engine.loader import ViewMaker

    train, _ = _digits()
    augment = augmentation_for("digits", train)
    images = train.images[:6]

    def views(world_size=1, rank=0, part=images, **kw):
        maker = ViewMaker(
            augment, 3, torch.Generator().manual_seed(5), world_size=world_size, rank=rank, **kw
        )
        return maker, maker(part)

    maker, whole = views()
    assert whole.shape == (3, 6, *images.shape[1:]) and maker._apply == augment.apply
    assert not torch.equal(whole[0], whole[1])  # views differ
    for rank in (0, 1):
        _, share = views(2, rank, images[3 * rank : 3 * rank + 3])
        torch.testing.assert_close(share, whole[:, 3 * rank : 3 * rank + 3], rtol=0, atol=0)
    _, last = views(3, 2, images[4:])
    torch.testing.assert_close(last, whole[:, 4:], rtol=0, atol=0)
    _, default = views(world_size=1, rank=0)
    maker = ViewMaker(augment, 3, torch.Generator().manual_seed(5))  # world_size 1, rank 0 by default
    torch.testing.assert_close(maker(images), default, rtol=0, atol=0)
    maker = ViewMaker(augment, 3, torch.Generator().manual_seed(5), world_size=2)  # rank 0 by default
    torch.testing.assert_close(maker(images[:3]), whole[:, :3], rtol=0, atol=0)
    assert maker._own_rows(3, torch.device("meta")).device.type == "meta"
    assert ViewMaker(augment, 2, None, world_size=3, rank=1)._own_rows(4, torch.device("cpu")).tolist() == [
        *range(4, 8),
        *range(16, 20),
    ]


def test_view_maker_copies_each_image_per_view_in_the_chosen_memory_format(monkeypatch):
    """With an augmentation that changes nothing (whole-image crops, no flip, jitter, grayscale or blur),
    every view is the normalized image itself; the views come contiguous by default and channels-last when
    asked; ``compile`` compiles the augmentation's apply, and only then."""
    from vprob.data import SimCLRAugment
    from vprob.engine.loader import ViewMaker

    identity = SimCLRAugment(
        4, 3, (0.5,) * 3, (0.25,) * 3, (1.0, 1.0), (1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0
    )
    images = torch.randint(
        0, 256, (5, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    views = ViewMaker(identity, 3, torch.Generator().manual_seed(0))(images)
    assert views.shape == (3, 5, 3, 4, 4)
    for view in views:
        torch.testing.assert_close(view, identity.normalize(images), rtol=0, atol=1e-5)
        assert view.is_contiguous()
    last = ViewMaker(identity, 2, torch.Generator().manual_seed(0), channels_last=True)(images)
    assert last[0].is_contiguous(memory_format=torch.channels_last) and not last[0].is_contiguous()
    monkeypatch.setattr(torch, "compile", lambda fn: ("compiled", fn))
    assert ViewMaker(identity, 2, None, compile=True)._apply == ("compiled", identity.apply)
    assert ViewMaker(identity, 2, None)._apply == identity.apply


# ------------------------------------------------------------------------------------------------ state


def _state_parts(seed=0, **config):
    from vprob.config import make_config

    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5**i)
    generator = torch.Generator().manual_seed(seed + 1)
    return (
        make_config(**{"data": "digits", "method": "simclr", **config}),
        model,
        optimizer,
        scheduler,
        generator,
    )


def test_capture_and_restore_put_back_every_stream_and_refuse_other_settings():
    from dataclasses import asdict

    from vprob.engine.state import RESUME_KEYS, capture, restore

    config, model, optimizer, scheduler, generator = _state_parts()
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = capture(config, model, optimizer, scheduler, generator, 7, image_shape=(torch.tensor(1), 8, 8))
    assert list(state) == ["config", "model", "optimizer", "scheduler", "step", "image_shape", "rng"]
    assert state["config"] == asdict(config) and state["step"] == 7
    assert state["image_shape"] == [1, 8, 8] and all(type(n) is int for n in state["image_shape"])
    assert capture(config, model, optimizer, scheduler, generator, 0)["image_shape"] is None
    assert state["rng"]["cuda"] == [] and torch.equal(state["rng"]["torch"], torch.get_rng_state())
    expected_torch, expected_gen = torch.rand(3), torch.rand(3, generator=generator)

    fresh_config, fresh, fresh_opt, fresh_sched, fresh_gen = _state_parts(seed=3)
    torch.rand(5)  # move the global stream on
    assert restore(state, fresh_config, fresh, fresh_opt, fresh_sched, fresh_gen) == 7
    assert torch.equal(torch.rand(3), expected_torch)
    assert torch.equal(torch.rand(3, generator=fresh_gen), expected_gen)
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True)
    )
    assert fresh_opt.state_dict()["state"][0]["momentum_buffer"].equal(
        optimizer.state[model.weight]["momentum_buffer"]
    )
    assert fresh_sched.last_epoch == 1 and fresh_opt.param_groups[0]["lr"] == pytest.approx(0.05)

    # A checkpoint from a GPU machine (its CUDA streams saved) resumes on a CPU-only one.
    gpu_state = {**state, "rng": {**state["rng"], "cuda": [torch.zeros(16, dtype=torch.uint8)]}}
    if not torch.cuda.is_available():
        restore(gpu_state, *_state_parts())

    for key in RESUME_KEYS:
        other = {**state, "config": {**state["config"], key: "other"}}
        with pytest.raises(CheckpointErrorType) as info:
            restore(other, *_state_parts())
        now = getattr(config, key)
        assert str(info.value) == (
            f"checkpoint was written with {key}='other', this run has {key}={now!r}; "
            "resume with the same settings"
        )
    restore({**state, "config": {**state["config"], "seed": 123, "log_every": 1}}, *_state_parts())
    with pytest.raises(CheckpointErrorType) as info:  # no saved config: the defaults, which differ here
        restore({key: value for key, value in state.items() if key != "config"}, *_state_parts())
    assert str(info.value).startswith(
        "checkpoint was written with method='vsimclr', this run has method='simclr'"
    )
    wrong = {**state, "model": {"weight": torch.zeros(5, 5)}}
    with pytest.raises(CheckpointErrorType, match="^checkpoint does not match this model: "):
        restore(wrong, *_state_parts())
    with pytest.raises(CheckpointErrorType, match="^checkpoint does not match this model: 'optimizer'"):
        restore({key: value for key, value in state.items() if key != "optimizer"}, *_state_parts())


def test_cuda_streams_are_saved_and_put_back_only_where_there_is_cuda(monkeypatch):
    """torch.cuda's state functions replaced by recorders: capture asks for the CUDA streams only when CUDA is
    available; restore puts saved ones back (on the CPU) only when there are some and CUDA is available."""
    from vprob.engine.state import capture, restore

    put_back = []
    saved_streams = [torch.arange(3, dtype=torch.uint8), torch.arange(4, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved_streams)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", put_back.append)
    for available in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda available=available: available)
        state = capture(*_state_parts(), 1)
        assert state["rng"]["cuda"] == (saved_streams if available else [])
        restore({**state, "rng": {**state["rng"], "cuda": saved_streams}}, *_state_parts())
        restore({**state, "rng": {**state["rng"], "cuda": []}}, *_state_parts())
    (streams,) = put_back
    assert len(streams) == 2 and all(torch.equal(a, b) for a, b in zip(streams, saved_streams, strict=True))
