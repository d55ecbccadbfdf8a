"""The data-set registry's wiring (vprob.data.registry): the recipes by resolution, what each record's loader
passes on (device, image size, cache folder; the readers replaced by recorders), the resize of both splits
with statistics recomputed on the resized train split (torchvision and numpy as references), the argument
checks of load_dataset with their whole messages, the evaluation splits and their skip reasons, the training
set of a method that needs labels and the augmentation built for a set. Written for #19 (mutation testing
left these unpinned by the layout tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vprob.data import registry
from vprob.data.datasets import UNLABELLED, ImageSet
from vprob.data.registry import (
    DatasetSpec,
    EvalSets,
    augmentation_for,
    evaluation_sets,
    get_dataset,
    load_dataset,
    recipe_for_size,
    training_set,
)


def _set(n=4, size=8, channels=3, seed=0, labels=None, unlabelled=False, coarse=False) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.tensor(labels if labels is not None else [i % 2 for i in range(n)])
    extra = (torch.tensor([i % 3 for i in range(n)]), ("x", "y", "z")) if coarse else (None, None)
    return ImageSet(images, labels, ("a", "b"), (0.5,) * channels, (0.25,) * channels, unlabelled, *extra)


def test_recipe_for_size_switches_to_imagenet_at_64_px_and_copies():
    cifar = dict(
        crop_scale=(0.2, 1.0),
        crop_ratio=(3 / 4, 4 / 3),
        flip_p=0.5,
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_p=0.8,
        grayscale_p=0.2,
    )
    imagenet = dict(
        cifar, crop_scale=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5, blur_sigma=(0.1, 2.0)
    )
    assert recipe_for_size(63) == cifar and recipe_for_size(1) == cifar
    assert recipe_for_size(64) == imagenet and recipe_for_size(224) == imagenet
    mine = recipe_for_size(32)
    mine["flip_p"] = 0.0  # a copy: the registry's recipe is unchanged
    assert recipe_for_size(32)["flip_p"] == 0.5 and registry.CIFAR_RECIPE["flip_p"] == 0.5


def test_digits_classes_and_device(monkeypatch):
    assert get_dataset("digits").classes(None) == ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
    moved = []

    class Split:
        def __init__(self, name):
            self.name = name

        def to(self, device):
            moved.append((self.name, device))
            return self

    monkeypatch.setattr(registry, "load_digits", lambda: (Split("train"), Split("test")))
    train, test = load_dataset("digits", device="meta")
    assert (train.name, test.name) == ("train", "test")
    assert moved == [("train", torch.device("meta")), ("test", torch.device("meta"))]


def test_resized_keeps_labels_and_flags_and_recomputes_train_statistics():
    from torchvision.transforms.v2 import functional as TF

    train = _set(n=5, size=32, seed=1, labels=[0, 1, UNLABELLED, 1, 0], unlabelled=True, coarse=True)
    test = _set(n=3, size=32, seed=2, coarse=True)
    small_train, small_test = registry._resized((train, test), 16)
    for small, big in ((small_train, train), (small_test, test)):
        assert small.images.shape == (len(big), 3, 16, 16)
        ref = TF.center_crop(TF.resize(big.images.float(), [16], antialias=True), [16, 16]).round()
        assert (small.images.float() - ref).abs().max() <= 1
        assert torch.equal(small.labels, big.labels) and small.classes == big.classes
        assert small.unlabelled == big.unlabelled
        assert torch.equal(small.coarse_labels, big.coarse_labels) and small.coarse_classes == ("x", "y", "z")
    pixels = small_train.images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(small_train.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(small_train.std, pixels.std(axis=(0, 2, 3)), rtol=1e-12)
    assert small_test.mean == small_train.mean and small_test.std == small_train.std  # the train statistics
    assert small_train.unlabelled is True and small_test.unlabelled is False
    sets = (train, test)
    assert registry._resized(sets, None) is sets and registry._resized(sets, 32) is sets


class _Recorder:
    """A reader's stand-in: its arguments, and a (train, test) pair of 32-pixel sets."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return _set(size=32, seed=3), _set(size=32, seed=4)


@pytest.mark.parametrize("reader", ["load_cifar10_any", "load_cifar100"])
def test_cifar_loaders_pass_device_and_resize_on_request(monkeypatch, tmp_path, reader):
    recorder = _Recorder()
    monkeypatch.setattr(registry, reader, recorder)
    monkeypatch.setenv("VPROB_CACHE_DIR", str(tmp_path / "env-cache"))
    name = "cifar10" if reader == "load_cifar10_any" else "cifar100"
    train, test = load_dataset(name, tmp_path / "data", device="cpu", image_size=16)
    assert train.images.shape[-1] == 16 and test.images.shape[-1] == 16
    args, kwargs = recorder.calls[-1]
    assert args == (str(tmp_path / "data"),) and kwargs["device"] == torch.device("cpu")
    train, _ = load_dataset(name, tmp_path / "data")
    assert train.images.shape[-1] == 32
    if name == "cifar10":
        # the cache folder given, else the environment's (never None: the npz reader would not cache)
        assert kwargs["cache_dir"] == tmp_path / "env-cache"
        load_dataset(name, tmp_path / "data", cache_dir=tmp_path / "mine")
        assert recorder.calls[-1][1]["cache_dir"] == tmp_path / "mine"
    else:
        assert set(kwargs) == {"device"}


def test_stl10_and_image_folder_loaders_pass_device_size_and_cache(monkeypatch, tmp_path):
    stl, folder = _Recorder(), _Recorder()
    monkeypatch.setattr(registry, "load_stl10", stl)
    monkeypatch.setattr(registry, "load_image_folder", folder)
    load_dataset("stl10", tmp_path, device="cpu")
    load_dataset("stl10", tmp_path, device="cpu", image_size=48)
    assert stl.calls == [
        ((str(tmp_path),), dict(device=torch.device("cpu"), image_size=96)),
        ((str(tmp_path),), dict(device=torch.device("cpu"), image_size=48)),
    ]
    load_dataset("imagefolder", tmp_path, device="cpu")
    load_dataset("imagefolder", tmp_path, device="cpu", image_size=1, cache_dir=Path("/c"))
    assert folder.calls == [
        ((str(tmp_path),), dict(device=torch.device("cpu"), image_size=64, cache_dir=None)),
        ((str(tmp_path),), dict(device=torch.device("cpu"), image_size=1, cache_dir="/c")),
    ]
    assert type(folder.calls[-1][1]["cache_dir"]) is str  # a Path becomes a str
    load_dataset("imagefolder", None)
    assert folder.calls[-1][0] == (None,)


def test_load_dataset_refusals_name_the_argument():
    with pytest.raises(ValueError) as info:
        load_dataset("digits", image_size=16, cache_dir="/c")
    assert (
        str(info.value)
        == "data set 'digits' has a fixed image size and no cache; it takes no image_size or cache_dir"
    )
    with pytest.raises(ValueError) as info:
        load_dataset("digits", cache_dir="/c")
    assert str(info.value).endswith("it takes no cache_dir")
    for bad in (0, -3, 2.0, True, "16"):
        with pytest.raises(ValueError) as info:
            load_dataset("imagefolder", "/nowhere", image_size=bad)
        assert str(info.value) == f"image_size must be a positive integer, got {bad!r}"
    with pytest.raises(ValueError) as info:
        get_dataset("mnist")
    assert (
        str(info.value)
        == "unknown data set 'mnist'; valid names: digits, cifar10, cifar100, stl10, imagefolder"
    )
    with pytest.raises(ValueError, match="unknown data set \\['x'\\]"):
        get_dataset(["x"])  # unhashable: the same message, not a TypeError


def test_evaluation_sets_fit_on_labelled_images_and_say_why_they_skip(monkeypatch):
    train = _set(n=5, labels=[1, UNLABELLED, 0, UNLABELLED, 1], unlabelled=True)
    test = _set(n=1, seed=5)
    sets = evaluation_sets("stl10", train, test)
    assert not sets.skipped and sets.reason is None and sets.test is test  # one test image is enough
    assert torch.equal(sets.train.labels, torch.tensor([1, 0, 1])) and sets.train.unlabelled is False

    empty_test = _set(n=1, seed=5).subset(torch.tensor([], dtype=torch.long))
    sets = evaluation_sets("imagefolder", train, empty_test)
    assert sets == EvalSets(
        None,
        None,
        "evaluation skipped: the imagefolder data has no labelled val or test split to score on "
        "(add DIR/val/<class>/ folders)",
    )
    assert sets.skipped
    nothing_labelled = _set(n=2, labels=[UNLABELLED, UNLABELLED], unlabelled=True)
    sets = evaluation_sets("imagefolder", nothing_labelled, test)
    assert sets == EvalSets(
        None,
        None,
        "evaluation skipped: the imagefolder training set has no labelled images "
        "(an unlabelled folder trains self-supervised methods only)",
    )

    seen = []

    def first_two(s):
        seen.append(s)
        return s.subset(slice(0, 2))

    custom = DatasetSpec(
        "custom", registry._load_digits, registry._digits_classes, {}, {}, eval_train=first_two
    )
    monkeypatch.setitem(registry.DATASETS, "custom", custom)
    sets = evaluation_sets("custom", train, test)
    assert seen == [train] and torch.equal(sets.train.labels, torch.tensor([1, UNLABELLED]))


def test_training_set_for_methods_with_and_without_labels():
    labelled = _set(n=3)
    assert training_set(labelled, needs_labels=True) is labelled
    mixed = _set(n=4, labels=[UNLABELLED, 1, UNLABELLED, 0], unlabelled=True)
    assert training_set(mixed, needs_labels=False) is mixed
    assert torch.equal(training_set(mixed, needs_labels=True).labels, torch.tensor([1, 0]))
    with pytest.raises(ValueError) as info:
        training_set(_set(n=2, labels=[UNLABELLED] * 2, unlabelled=True), needs_labels=True)
    assert str(info.value) == "this method needs class labels, but the training set has no labelled images"


@pytest.mark.parametrize("size, blur", [(32, 0.0), (63, 0.0), (64, 0.5)])
def test_augmentation_for_sizes_the_recipe_from_the_images(size, blur):
    image_set = ImageSet(
        torch.zeros(2, 3, size, size, dtype=torch.uint8),
        torch.tensor([0, 1]),
        ("a", "b"),
        (0.1, 0.2, 0.3),
        (0.4, 0.5, 0.6),
    )
    aug = augmentation_for("imagefolder", image_set, flip_p=0.25)
    assert aug.image_size == size and aug.channels == 3 and aug.blur_p == blur
    assert aug.mean == (0.1, 0.2, 0.3) and aug.std == (0.4, 0.5, 0.6)
    assert aug.flip_p == 0.25 and aug.grayscale_p == 0.2  # the override, the recipe's value
    digits = ImageSet(
        torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), ("a", "b"), (0.5,), (0.2,)
    )
    aug = augmentation_for("digits", digits)
    assert (aug.image_size, aug.channels, aug.crop_scale, aug.flip_p) == (8, 1, (0.5, 1.0), 0.0)
