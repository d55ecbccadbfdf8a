"""CIFAR-10 and CIFAR-100 in torchvision's layout (vprob.data.cifar) on miniature copies written here as the
real files are (protocol-2 pickles of dicts with bytes keys; each image row the 1024 red, green and blue
values in row-major order, made from HWC arrays with numpy): pixels, labels, class names and statistics, the
layout detection and its npz branch, the memory check's arguments, and every refusal's whole message, each
with the data set's help text. Written for #19 (mutation testing left these unpinned by the layout tests)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from _cifar_files import CIFAR10_NAMES, write_cifar10, write_cifar100, write_pickle

from vprob.data import cifar
from vprob.data.cifar import (
    CIFAR10_HELP,
    CIFAR100_HELP,
    cifar10_classes,
    cifar10_layout,
    cifar100_classes,
    load_cifar10_any,
    load_cifar100,
)


def _message(call, kind=ValueError) -> str:
    with pytest.raises(kind) as info:
        call()
    return str(info.value)


def _chw(hwc: np.ndarray) -> np.ndarray:
    return hwc.transpose(0, 3, 1, 2)


def test_cifar10_pixels_labels_names_and_statistics(tmp_path, monkeypatch):
    truth = write_cifar10(tmp_path, per_batch=2, n_test=3)
    fits = []
    monkeypatch.setattr(cifar, "check_fits_device", lambda *args: fits.append(args))
    folder = tmp_path / "cifar-10-batches-py"
    assert cifar10_layout(tmp_path) == ("torchvision", folder) and cifar10_layout(folder) == (
        "torchvision",
        folder,
    )
    train, test = load_cifar10_any(tmp_path)
    images = _chw(truth["train"])  # the five batches in order
    assert np.array_equal(train.images.numpy(), images) and train.images.device == torch.device("cpu")
    assert train.labels.tolist() == truth["train_y"] and train.labels.dtype == torch.int64
    assert np.array_equal(test.images.numpy(), _chw(truth["test"]))
    assert test.labels.tolist() == truth["test_y"]
    assert train.classes == CIFAR10_NAMES == cifar10_classes(tmp_path) and test.classes == train.classes
    assert train.unlabelled is False and test.unlabelled is False and train.coarse_labels is None
    pixels = images.astype(np.float64) / 255
    np.testing.assert_allclose(train.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(train.std, pixels.std(axis=(0, 2, 3)), rtol=1e-12)
    assert test.mean == train.mean and test.std == train.std
    assert fits == [(13, 3, 32, torch.device("cpu"), str(folder))]


def test_cifar100_fine_and_coarse(tmp_path, monkeypatch):
    truth = write_cifar100(tmp_path, n_train=4, n_test=2)
    fits = []
    monkeypatch.setattr(cifar, "check_fits_device", lambda *args: fits.append(args))
    folder = tmp_path / "cifar-100-python"
    for where in (tmp_path, folder):  # the cifar-100-python folder itself is accepted
        train, test = load_cifar100(where)
        assert np.array_equal(train.images.numpy(), _chw(truth["train"][0]))
        assert np.array_equal(test.images.numpy(), _chw(truth["test"][0]))
        assert train.labels.tolist() == truth["train"][1] and test.labels.tolist() == truth["test"][1]
        assert (
            train.coarse_labels.tolist() == truth["train"][2]
            and test.coarse_labels.tolist() == truth["test"][2]
        )
        assert train.classes == tuple(f"fine{i}" for i in range(100)) == cifar100_classes(where)
        assert train.coarse_classes == tuple(f"coarse{i}" for i in range(20)) == test.coarse_classes
        assert train.images.device == torch.device("cpu") and train.unlabelled is False
    assert fits[-1] == (6, 3, 32, torch.device("cpu"), str(folder))


def test_the_npz_layout_is_told_by_content(tmp_path, monkeypatch):
    np.savez(tmp_path / "train.npz", x=np.zeros(1))
    assert cifar10_layout(tmp_path) == ("npz", tmp_path)
    assert _message(lambda: cifar10_classes(tmp_path), FileNotFoundError) == (
        f"{tmp_path / 'test.npz'} is missing. {CIFAR10_HELP}"
    )
    np.savez(tmp_path / "test.npz", x=np.zeros(1))
    assert (
        _message(lambda: cifar10_classes(tmp_path))
        == f"{tmp_path / 'test.npz'}: missing array 'classes'. {CIFAR10_HELP}"
    )
    np.savez(tmp_path / "test.npz", classes=np.array(["cat", "dog"]))
    assert cifar10_classes(tmp_path) == ("cat", "dog")
    np.savez(tmp_path / "test.npz", classes=np.array(["cat", None], dtype=object))  # a pickle: never loaded
    with pytest.raises(ValueError, match="allow_pickle"):
        cifar10_classes(tmp_path)
    seen = []
    monkeypatch.setattr(cifar, "load_cifar10", lambda *args, **kwargs: seen.append((args, kwargs)) or "sets")
    assert load_cifar10_any(tmp_path, cache_dir=tmp_path / "c") == "sets"
    assert seen == [((tmp_path,), {"device": torch.device("cpu"), "cache_dir": tmp_path / "c"})]
    (tmp_path / "train.npz").write_bytes(b"abcdefgh")
    assert _message(lambda: cifar10_layout(tmp_path)) == (
        f"{tmp_path / 'train.npz'} is not an npz (zip) archive (it starts with b'abcd'). {CIFAR10_HELP}"
    )


def test_folder_refusals(tmp_path):
    assert (
        _message(lambda: cifar10_layout(None))
        == f"data set 'cifar10' needs a data folder (--data-dir). {CIFAR10_HELP}"
    )
    missing = tmp_path / "nowhere"
    assert _message(lambda: cifar10_layout(missing), FileNotFoundError) == (
        f"CIFAR-10 data folder {str(missing)!r} does not exist. {CIFAR10_HELP}"
    )
    assert _message(lambda: cifar10_layout(tmp_path), FileNotFoundError) == (
        f"{tmp_path} holds no CIFAR-10 files (neither cifar-10-batches-py/ nor train.npz). {CIFAR10_HELP}"
    )
    assert _message(lambda: load_cifar100(None)) == (
        f"data set 'cifar100' needs a data folder (--data-dir). {CIFAR100_HELP}"
    )
    assert _message(lambda: cifar100_classes(missing), FileNotFoundError) == (
        f"cifar100 data folder {str(missing)!r} does not exist. {CIFAR100_HELP}"
    )
    assert _message(lambda: cifar100_classes(tmp_path), FileNotFoundError) == (
        f"{tmp_path} holds neither cifar-100-python/ nor the files of that folder (meta). {CIFAR100_HELP}"
    )
    (tmp_path / "a").mkdir()
    write_pickle(tmp_path / "a" / "batches.meta", {b"label_names": [b"x"]})  # either file marks the folder
    assert cifar10_layout(tmp_path / "a") == ("torchvision", tmp_path / "a")
    (tmp_path / "b").mkdir()
    write_pickle(tmp_path / "b" / "data_batch_1", {})
    assert cifar10_layout(tmp_path / "b") == ("torchvision", tmp_path / "b")


def _damage10(folder: Path, how: str) -> tuple[Path, str]:
    meta, batch = folder / "batches.meta", folder / "data_batch_3"
    if how == "meta missing":
        meta.unlink()
        return meta, f"{meta} is missing. {CIFAR10_HELP}"
    if how == "meta truncated":
        meta.write_bytes(meta.read_bytes()[:10])
        return meta, f"{CIFAR10_HELP}"
    if how == "meta without names":
        write_pickle(meta, {b"num_vis": 3072, "other": 1})
        return meta, f"{meta}: no entry 'label_names' (found ['num_vis', 'other']). {CIFAR10_HELP}"
    if how == "meta names empty":
        write_pickle(meta, {b"label_names": []})
        return meta, f"{meta}: 'label_names' must be a non-empty list of names. {CIFAR10_HELP}"
    if how == "meta names not a list":
        write_pickle(meta, {b"label_names": b"cat"})
        return meta, f"{meta}: 'label_names' must be a non-empty list of names. {CIFAR10_HELP}"
    if how == "batch not a dict":
        write_pickle(batch, [1, 2])
        return batch, f"{batch}: holds a list, not the dict of a CIFAR batch file. {CIFAR10_HELP}"
    if how == "batch truncated":
        batch.write_bytes(batch.read_bytes()[:20])
        return batch, f"{CIFAR10_HELP}"
    if how == "no data":
        write_pickle(batch, {b"labels": [0, 1]})
        return batch, f"{batch}: no entry 'data' (found ['labels']). {CIFAR10_HELP}"
    if how == "data a list":
        write_pickle(batch, {b"labels": [0, 1], b"data": [1, 2]})
        return batch, f"{batch}: 'data' must be a uint8 array (N, 3072), got list. {CIFAR10_HELP}"
    if how == "data float":
        write_pickle(batch, {b"labels": [0, 1], b"data": np.zeros((2, 3072))})
        return (
            batch,
            f"{batch}: 'data' must be a uint8 array (N, 3072), got float64 (2, 3072). {CIFAR10_HELP}",
        )
    if how == "data 3-D":
        write_pickle(batch, {b"labels": [0, 1], b"data": np.zeros((2, 3, 1024), np.uint8)})
        return (
            batch,
            f"{batch}: 'data' must be a uint8 array (N, 3072), got uint8 (2, 3, 1024). {CIFAR10_HELP}",
        )
    if how == "data narrow":
        write_pickle(batch, {b"labels": [0, 1], b"data": np.zeros((2, 3071), np.uint8)})
        return batch, f"{batch}: 'data' must be a uint8 array (N, 3072), got uint8 (2, 3071). {CIFAR10_HELP}"
    data = np.zeros((2, 3072), np.uint8)
    if how == "no labels":
        write_pickle(batch, {b"data": data, "x": 1})
        return batch, f"{batch}: no entry 'labels' (found ['data', 'x']). {CIFAR10_HELP}"
    if how == "labels too many":
        write_pickle(batch, {b"data": data, b"labels": [0, 1, 2]})
        return (
            batch,
            f"{batch}: 'labels' must hold 2 integer labels (one per image), got int64 (3,). {CIFAR10_HELP}",
        )
    if how == "labels float":
        write_pickle(batch, {b"data": data, b"labels": [0.0, 1.0]})
        return (
            batch,
            f"{batch}: 'labels' must hold 2 integer labels (one per image), got float64 (2,). {CIFAR10_HELP}",
        )
    if how == "label 10":
        write_pickle(batch, {b"data": data, b"labels": [3, 10]})
        return batch, (
            f"{batch}: labels[1] = 10 is outside the 10 classes of the meta file (labels 0..9; 1 bad labels "
            "in all)"
        )
    if how == "test batch":
        test = folder / "test_batch"
        write_pickle(test, {b"data": data})
        return test, f"{test}: no entry 'labels' (found ['data']). {CIFAR10_HELP}"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "meta missing",
        "meta truncated",
        "meta without names",
        "meta names empty",
        "meta names not a list",
        "batch not a dict",
        "batch truncated",
        "no data",
        "data a list",
        "data float",
        "data 3-D",
        "data narrow",
        "no labels",
        "labels too many",
        "labels float",
        "label 10",
        "test batch",
    ],
)
def test_cifar10_damage_is_named_with_the_help(tmp_path, how):
    write_cifar10(tmp_path, per_batch=2, n_test=3)
    path, expected = _damage10(tmp_path / "cifar-10-batches-py", how)
    kind = FileNotFoundError if how == "meta missing" else ValueError
    message = _message(lambda: load_cifar10_any(tmp_path), kind)
    if "truncated" in how:
        assert message.startswith(f"{path} is not a readable pickle file") and message.endswith(
            f". {expected}"
        )
    else:
        assert message == expected


def test_str_keys_and_names_of_a_latin1_repickle_are_accepted(tmp_path):
    write_cifar10(tmp_path, per_batch=1, n_test=1)
    folder = tmp_path / "cifar-10-batches-py"
    write_pickle(folder / "batches.meta", {"label_names": ["caf\u00e9", *CIFAR10_NAMES[1:]]})
    batch = pickle.loads((folder / "data_batch_2").read_bytes())
    write_pickle(folder / "data_batch_2", {k.decode(): v for k, v in batch.items()})
    train, _ = load_cifar10_any(tmp_path)
    assert train.classes[0] == "caf\u00e9" and len(train) == 5
    write_pickle(
        folder / "batches.meta",
        {b"label_names": ["caf\u00e9".encode(), *[n.encode() for n in CIFAR10_NAMES[1:]]]},
    )
    assert cifar10_classes(tmp_path)[0] == "caf\u00e9"  # bytes names are UTF-8


@pytest.mark.parametrize("where", ["meta", "train", "test"])
def test_cifar100_damage_is_named_with_the_help(tmp_path, where):
    write_cifar100(tmp_path, n_train=4, n_test=2)
    folder = tmp_path / "cifar-100-python"
    path = folder / where
    if where == "meta":
        write_pickle(path, {b"fine_label_names": [b"a"], b"coarse_label_names": []})
        expected = f"{path}: 'coarse_label_names' must be a non-empty list of names. {CIFAR100_HELP}"
        assert _message(lambda: cifar100_classes(tmp_path)) == expected
        write_pickle(path, {b"fine_label_names": [b"a"]})
        expected = f"{path}: no entry 'coarse_label_names' (found ['fine_label_names']). {CIFAR100_HELP}"
        assert _message(lambda: cifar100_classes(tmp_path)) == expected
        path.write_bytes(b"\x80\x02")
        message = _message(lambda: cifar100_classes(tmp_path))
        assert message.startswith(f"{path} is not a readable pickle file") and message.endswith(
            f". {CIFAR100_HELP}"
        )
        return
    write_pickle(path, {b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [0]})
    expected = f"{path}: no entry 'coarse_labels' (found ['data', 'fine_labels']). {CIFAR100_HELP}"
    assert _message(lambda: load_cifar100(tmp_path)) == expected
    path.write_bytes(b"\x80\x02")
    message = _message(lambda: load_cifar100(tmp_path))
    assert message.startswith(f"{path} is not a readable pickle file") and message.endswith(
        f". {CIFAR100_HELP}"
    )
