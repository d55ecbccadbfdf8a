"""Standard on-disk layouts (torchvision's CIFAR-10/100 and STL-10 files, image folders) written in miniature
here, read back pixel for pixel, refused clearly when broken, cached, and trained on through ``vprob``."""

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from _cifar_files import CIFAR10_NAMES, random_hwc, write_cifar10, write_cifar100, write_pickle

from vprob.cli import main
from vprob.data import evaluation_sets, load_dataset, training_set
from vprob.data.cache import cached_arrays
from vprob.data.datasets import channel_stats
from vprob.data.decode import bytes_needed, check_fits, largest_image_size

PIL = pytest.importorskip("PIL.Image")


# ------------------------------------------------------------------------------------- writing the layouts


def _stl_bytes(images_hwc):
    """STL-10's binary layout from its description: per image, per channel, the pixels column by column."""
    out = bytearray()
    for img in images_hwc:
        for c in range(3):
            for x in range(img.shape[1]):
                out += img[:, x, c].tobytes()
    return bytes(out)


def write_stl10(root: Path, n_train=10, n_unlabeled=14, n_test=8, seed=2):
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    truth = {}
    for split, n in (("train", n_train), ("unlabeled", n_unlabeled), ("test", n_test)):
        x = random_hwc(rng, n, 96)
        (folder / f"{split}_X.bin").write_bytes(_stl_bytes(x))
        y = None
        if split != "unlabeled":
            y = rng.integers(1, 11, n).astype(np.uint8)
            (folder / f"{split}_y.bin").write_bytes(y.tobytes())
        truth[split] = (x, y)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return truth


def _save_image(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    image = PIL.fromarray(array)
    if mode:
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else image.save(path)


def write_image_folder(root: Path, size=16, per_class=5, seed=3, labelled=True):
    """PNG and JPEG files, some grayscale, one RGBA, one of another size; val holds two of the classes."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", 2)):
        for name in ("cat", "dog", "fox"):
            if split == "val" and name == "fox":
                continue
            for i in range(count):
                img = random_hwc(rng, 1, size)[0]
                sub = f"{name}/" if labelled else f"{name}_"
                suffix = ".png" if i % 2 else ".JPEG"
                mode = "L" if i == 1 else ("RGBA" if i == 3 else None)
                if i == 4:
                    img = rng.integers(0, 256, (size + 8, size * 2, 3), dtype=np.uint8)
                if split == "val" and not labelled:
                    continue
                _save_image(root / split / f"{sub}{i}{suffix}", img, mode)
    (root / "train" / ("cat" if labelled else "") / "notes.txt").write_text("not an image")


# --------------------------------------------------------------------------------------------- CIFAR-10/100


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("c10")
    return root, write_cifar10(root)


def test_cifar10_torchvision_layout_pixels_and_labels(cifar10_dir):
    root, truth = cifar10_dir
    for where in (root, root / "cifar-10-batches-py"):  # torchvision's root, or the folder itself
        train, test = load_dataset("cifar10", where)
        assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (8, 3, 32, 32)
        np.testing.assert_array_equal(train.images.permute(0, 2, 3, 1).numpy(), truth["train"])
        np.testing.assert_array_equal(test.images.permute(0, 2, 3, 1).numpy(), truth["test"])
        assert train.labels.tolist() == truth["train_y"] and test.labels.tolist() == truth["test_y"]
        assert train.classes == CIFAR10_NAMES and test.mean == channel_stats(train.images)[0]


def test_cifar100_fine_and_coarse(tmp_path):
    truth = write_cifar100(tmp_path)
    train, test = load_dataset("cifar100", tmp_path)
    np.testing.assert_array_equal(train.images.permute(0, 2, 3, 1).numpy(), truth["train"][0])
    assert train.labels.tolist() == truth["train"][1] and test.labels.tolist() == truth["test"][1]
    assert train.coarse_labels.tolist() == truth["train"][2] and len(train.coarse_classes) == 20
    assert train.num_classes == 100 and train.classes[7] == "fine7"
    sub = train.subset(train.labels < 50)  # the coarse labels follow every subset
    fine, coarse = truth["train"][1], truth["train"][2]
    assert sub.coarse_labels.tolist() == [c for f, c in zip(fine, coarse, strict=True) if f < 50]


def _copy_tree(src: Path, dst: Path) -> Path:
    for path in src.rglob("*"):
        if path.is_file():
            (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / path.relative_to(src)).write_bytes(path.read_bytes())
    return dst


@pytest.mark.parametrize(
    "damage, error, match",
    [
        ("missing_folder", FileNotFoundError, "cifar-10-batches-py"),
        ("empty_folder", FileNotFoundError, "cs.toronto.edu"),
        ("truncated", ValueError, r"data_batch_3.*not a readable pickle"),
        ("missing_batch", FileNotFoundError, "data_batch_5 is missing"),
        ("bad_label", ValueError, r"test_batch: labels\[2\] = 10 is outside the 10 classes"),
        ("wrong_shape", ValueError, r"'data' must be a uint8 array \(N, 3072\)"),
        ("code", ValueError, "refused to load the global posix.system"),
    ],
)
def test_cifar10_bad_input_names_file_and_layout(cifar10_dir, tmp_path, damage, error, match):
    root = _copy_tree(cifar10_dir[0], tmp_path / "copy")
    folder = root / "cifar-10-batches-py"
    if damage == "missing_folder":
        root = tmp_path / "nowhere"
    elif damage == "empty_folder":
        root = tmp_path / "empty"
        root.mkdir()
    elif damage == "truncated":
        data = (folder / "data_batch_3").read_bytes()
        (folder / "data_batch_3").write_bytes(data[: len(data) // 2])
    elif damage == "missing_batch":
        (folder / "data_batch_5").unlink()
    elif damage == "bad_label":
        batch = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")
        batch[b"labels"][2] = 10
        write_pickle(folder / "test_batch", batch)
    elif damage == "wrong_shape":
        batch = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")
        batch[b"data"] = batch[b"data"][:, :100]
        write_pickle(folder / "data_batch_1", batch)
    elif damage == "code":
        # pickle's way of calling os.system("true") when loaded
        (folder / "data_batch_2").write_bytes(
            b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
        )
    with pytest.raises(error, match=match):
        load_dataset("cifar10", root)


def test_cifar10_npz_archives_detected_by_content(tmp_path):
    """The project's JPEG archives still load under the same --data name, told apart by their bytes."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("test", 4)):
        blobs = []
        for _ in range(n):
            buf = io.BytesIO()
            PIL.fromarray(random_hwc(rng, 1)[0]).save(buf, format="JPEG")
            blobs.append(buf.getvalue())
        np.savez(
            tmp_path / f"{split}.npz",
            jpeg=np.frombuffer(b"".join(blobs), np.uint8),
            offsets=np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64),
            y=np.arange(n) % 10,
            classes=np.asarray(CIFAR10_NAMES),
        )
        arrays[split] = blobs
    train, test = load_dataset("cifar10", tmp_path)
    assert len(train) == 6 and len(test) == 4 and train.classes == CIFAR10_NAMES
    ref = np.asarray(PIL.open(io.BytesIO(arrays["train"][2])).convert("RGB")).transpose(2, 0, 1)
    assert np.abs(train.images[2].numpy().astype(int) - ref).max() <= 1
    (tmp_path / "train.npz").write_bytes(b"\x80\x02not a zip")
    with pytest.raises(ValueError, match="not an npz"):
        load_dataset("cifar10", tmp_path)


# ------------------------------------------------------------------------------------------------- STL-10


@pytest.fixture(scope="module")
def stl10_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("stl")
    return root, write_stl10(root)


def test_stl10_column_major_train_plus_unlabeled(stl10_dir):
    root, truth = stl10_dir
    train, test = load_dataset("stl10", root)
    assert train.images.shape == (24, 3, 96, 96) and test.images.shape == (8, 3, 96, 96)
    expected = np.concatenate([truth["train"][0], truth["unlabeled"][0]])
    np.testing.assert_array_equal(train.images.permute(0, 2, 3, 1).numpy(), expected)
    np.testing.assert_array_equal(test.images.permute(0, 2, 3, 1).numpy(), truth["test"][0])
    assert train.labels.tolist() == (truth["train"][1].astype(int) - 1).tolist() + [-1] * 14
    assert train.unlabelled and not test.unlabelled and train.classes[2] == "car"
    splits = evaluation_sets("stl10", train, test)
    assert not splits.skipped and len(splits.train) == 10 and not splits.train.unlabelled
    assert splits.train.images.data_ptr() == train.images.data_ptr()  # a view: no second copy
    assert splits.test is test
    assert len(training_set(train, needs_labels=True)) == 10 and training_set(train, False) is train


@pytest.mark.parametrize(
    "damage, error, match",
    [
        ("truncated", ValueError, r"unlabeled_X.bin: .* not a whole number of 3x96x96 images"),
        ("labels", ValueError, r"train_y.bin: label 3 is 11, outside 1..10"),
        ("count", ValueError, r"test_y.bin: 7 labels for 8 images"),
        ("missing", FileNotFoundError, r"test_X.bin is missing.*cs.stanford.edu"),
    ],
)
def test_stl10_bad_input(stl10_dir, tmp_path, damage, error, match):
    folder = _copy_tree(stl10_dir[0], tmp_path / "copy") / "stl10_binary"
    if damage == "truncated":
        data = (folder / "unlabeled_X.bin").read_bytes()
        (folder / "unlabeled_X.bin").write_bytes(data[:-100])
    elif damage == "labels":
        y = bytearray((folder / "train_y.bin").read_bytes())
        y[3] = 11
        (folder / "train_y.bin").write_bytes(bytes(y))
    elif damage == "count":
        (folder / "test_y.bin").write_bytes((folder / "test_y.bin").read_bytes()[:-1])
    else:
        (folder / "test_X.bin").unlink()
    with pytest.raises(error, match=match):
        load_dataset("stl10", folder)  # the stl10_binary folder itself is accepted too


# ------------------------------------------------------------------------------------------- image folders


@pytest.fixture(scope="module")
def folder_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root)
    return root


@pytest.fixture(autouse=True)
def _cache_here(tmp_path, monkeypatch):
    monkeypatch.setenv("VPROB_CACHE_DIR", str(tmp_path / "cache"))


def test_image_folder_classes_conversions_and_resizing(folder_dir, tmp_path):
    train, test = load_dataset("imagefolder", folder_dir, image_size=16, cache_dir=tmp_path / "c")
    assert train.classes == ("cat", "dog", "fox") and train.images.shape == (15, 3, 16, 16)
    assert train.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert test.images.shape == (4, 3, 16, 16) and test.labels.tolist() == [0, 0, 1, 1]
    files = sorted((folder_dir / "train" / "cat").iterdir())
    files = [f for f in files if f.suffix != ".txt"]
    # Pillow as the independent decoder: PNG exactly, JPEG within decoder rounding; grayscale to 3 equal
    # channels, RGBA without its alpha.
    for i, path in enumerate(files):
        ref = np.asarray(PIL.open(path).convert("RGB"))
        if ref.shape[:2] != (16, 16):
            continue
        got = train.images[i].permute(1, 2, 0).numpy().astype(int)
        assert np.abs(got - ref).max() <= (0 if path.suffix == ".png" else 2), path
    gray = [i for i, f in enumerate(files) if PIL.open(f).mode == "L"][0]
    assert (train.images[gray][0] == train.images[gray][1]).all()
    assert not train.unlabelled and len(evaluation_sets("imagefolder", train, test).train) == 15


def test_unlabelled_image_folder_trains_and_skips_evaluation(tmp_path):
    write_image_folder(tmp_path / "u", labelled=False)
    train, test = load_dataset("imagefolder", tmp_path / "u", image_size=16)
    assert train.unlabelled and (train.labels == -1).all() and len(train) == 15 and len(test) == 0
    splits = evaluation_sets("imagefolder", train, test)
    assert splits.skipped and "no labelled images" in splits.reason
    with pytest.raises(ValueError, match="needs class labels"):
        training_set(train, needs_labels=True)


@pytest.mark.parametrize(
    "damage, error, match",
    [
        ("no_train", FileNotFoundError, r"train is missing.*DIR/train/<class>"),
        ("empty_class", ValueError, r"class folder .*train/emu holds no JPEG or PNG images"),
        ("unknown_val_class", ValueError, r"\['yak'\] are not classes of"),
        ("corrupt", ValueError, r"dog/2.JPEG: not a readable JPEG or PNG image"),
        ("mixed", ValueError, "mixes class folders"),
    ],
)
def test_image_folder_bad_input_names_the_path(folder_dir, tmp_path, damage, error, match):
    root = _copy_tree(folder_dir, tmp_path / "copy")
    if damage == "no_train":
        os.rename(root / "train", root / "training")
    elif damage == "empty_class":
        (root / "train" / "emu").mkdir()
    elif damage == "unknown_val_class":
        _save_image(root / "val" / "yak" / "0.png", np.zeros((16, 16, 3), np.uint8))
    elif damage == "corrupt":
        data = (root / "train" / "dog" / "2.JPEG").read_bytes()
        (root / "train" / "dog" / "2.JPEG").write_bytes(data[:20])
    else:
        _save_image(root / "train" / "loose.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(error, match=match):
        load_dataset("imagefolder", root, image_size=16)


# ------------------------------------------------------------------------------------------------- caching


def test_decoded_cache_hit_stale_and_corrupt(folder_dir, tmp_path, monkeypatch):
    import vprob.data.image_folder as image_folder

    cache = tmp_path / "c"
    first, _ = load_dataset("imagefolder", folder_dir, image_size=16, cache_dir=cache)
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 2  # train and val, one file each

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again although the cache is fresh")

    with monkeypatch.context() as m:
        m.setattr(image_folder, "decode_files", refuse)
        second, _ = load_dataset("imagefolder", folder_dir, image_size=16, cache_dir=cache)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)

    # A changed source (one image rewritten: new size and mtime) is decoded again.
    root = _copy_tree(folder_dir, tmp_path / "copy")
    base, _ = load_dataset("imagefolder", root, image_size=16, cache_dir=cache)
    _save_image(root / "train" / "dog" / "1.png", np.full((16, 16, 3), 7, np.uint8))
    changed, _ = load_dataset("imagefolder", root, image_size=16, cache_dir=cache)
    assert (changed.images[6] == 7).all() and not (base.images[6] == 7).all()

    # A damaged cache file is rebuilt, with a warning, never used.
    victim = sorted(cache.glob("imagefolder-train-16px-*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable"):
        again = [
            load_dataset("imagefolder", p, image_size=16, cache_dir=cache)[0] for p in (folder_dir, root)
        ]
    assert any(torch.equal(a.images, first.images) for a in again)


def test_cache_write_interrupted_leaves_nothing(tmp_path, monkeypatch):
    def build():
        return {"images": np.ones((4, 3, 2, 2), np.uint8)}

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.warns(UserWarning, match="could not write"):
        arrays, hit = cached_arrays("t", "train", tmp_path, 2, "key", build, tmp_path / "c")
    assert not hit and arrays["images"].sum() == 48
    assert list((tmp_path / "c").iterdir()) == []  # no half-written file, not even a temporary one


# -------------------------------------------------------------------------------------------- device memory


def test_memory_helpers_against_brute_force():
    for n, c, budget in ((1000, 3, 5_000_000), (105_000, 3, 2**31), (7, 1, 100), (10, 3, 50)):
        brute = max([s for s in range(0, 2000) if bytes_needed(n, c, s) <= budget], default=0)
        assert largest_image_size(n, c, budget) == brute
    assert bytes_needed(105_000, 3, 96) == 105_000 * (3 * 96 * 96 + 8)
    with pytest.raises(ValueError, match=r"2,903,880,000 bytes .* largest image size that fits is 64 px"):
        check_fits(105_000, 3, 96, free_bytes=2_600_000_000, what="stl10_binary")
    check_fits(105_000, 3, 64, free_bytes=2_600_000_000, what="fits")


# -------------------------------------------------------------------------- vprob train / evaluate / diagnose


def _vprob(data, data_dir, run_dir, capsys, diagnose=True):
    """vprob train (2 steps), evaluate and diagnose on one data folder, in-process; returns eval.json."""
    args = [
        "train",
        "--method",
        "simclr",
        "--data",
        data,
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(run_dir),
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--no-progress",
        "--epochs",
        "1",
        "--knn-k",
        "3",
    ]
    assert main(args) == 0
    assert main(["evaluate", str(run_dir), "--device", "cpu"]) == 0
    if diagnose:
        diagnose_args = ["diagnose", str(run_dir), "--device", "cpu", "--no-posterior", "--max-images", "64"]
        assert main(diagnose_args) == 0
        assert (run_dir / "report" / "report.json").is_file()
    capsys.readouterr()
    return json.loads((run_dir / "eval.json").read_text())


def test_vprob_commands_on_cifar10_torchvision_layout(cifar10_dir, tmp_path, capsys):
    evaluation = _vprob("cifar10", cifar10_dir[0], tmp_path / "run", capsys)
    assert 0.0 <= evaluation["linear_top1"] <= 1.0


@pytest.mark.slow  # 64-pixel images through a ResNet-18: about 20 s on one CPU core
def test_vprob_train_and_evaluate_on_image_folder(folder_dir, tmp_path, capsys):
    evaluation = _vprob("imagefolder", folder_dir, tmp_path / "run", capsys, diagnose=False)
    assert 0.0 <= evaluation["linear_top1"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["cifar100", "imagefolder"])
def test_vprob_commands_slow_layouts(layout, tmp_path, capsys, folder_dir):
    data_dir = folder_dir
    if layout == "cifar100":
        data_dir = tmp_path / "c100"
        write_cifar100(data_dir)
    evaluation = _vprob(layout, data_dir, tmp_path / "run", capsys)
    assert 0.0 <= evaluation["linear_top1"] <= 1.0


@pytest.mark.slow
def test_vprob_commands_on_stl10(stl10_dir, tmp_path, capsys):
    evaluation = _vprob("stl10", stl10_dir[0], tmp_path / "run", capsys)
    assert 0.0 <= evaluation["linear_top1"] <= 1.0


@pytest.mark.slow
def test_vprob_train_on_unlabelled_image_folder(tmp_path, capsys):
    write_image_folder(tmp_path / "u", labelled=False)
    args = [
        "train",
        "--method",
        "simclr",
        "--data",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "u"),
        "--run-dir",
        str(tmp_path / "run"),
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--no-progress",
        "--epochs",
        "1",
    ]
    assert main(args) == 0
    assert "evaluation skipped" in capsys.readouterr().out


def test_mixed_sizes_resized_like_torchvision(folder_dir):
    """A 24x32 image: shorter side to 16 (bilinear, antialiased), then the centre crop, as torchvision's
    Resize(16) + CenterCrop(16) on the decoded image (within one grey level of rounding)."""
    from torchvision.transforms.v2 import functional as TF

    train, _ = load_dataset("imagefolder", folder_dir, image_size=16)
    path = folder_dir / "train" / "cat" / "4.JPEG"
    decoded = torch.from_numpy(np.array(PIL.open(path).convert("RGB"))).permute(2, 0, 1)
    assert tuple(decoded.shape[1:]) == (24, 32)
    ref = TF.center_crop(TF.resize(decoded.float(), [16], antialias=True), [16, 16]).round()
    cat_files = sorted(p for p in (folder_dir / "train" / "cat").iterdir() if p.suffix != ".txt")
    got = train.images[cat_files.index(path)].float()
    assert (got - ref).abs().max() <= 1


def test_cifar_resized_on_request(cifar10_dir):
    from vprob.data.decode import resize_square

    full, _ = load_dataset("cifar10", cifar10_dir[0])
    small, small_test = load_dataset("cifar10", cifar10_dir[0], image_size=16)
    assert small.images.shape == (30, 3, 16, 16) and small_test.images.shape == (8, 3, 16, 16)
    assert torch.equal(small.images, resize_square(full.images, 16))
    assert small.mean == channel_stats(small.images)[0]
    with pytest.raises(ValueError, match="takes no image_size"):
        load_dataset("digits", image_size=16)


def test_engine_contract_evaluates_stl10_on_labelled_images_only(stl10_dir):
    """What the engine is to call: evaluation_sets gives kNN and the linear probe the 10 labelled train images
    (never the unlabeled ones, whose label -1 would index no class)."""
    from torch import nn

    from vprob.data import augmentation_for
    from vprob.evaluate import evaluate_backbone

    train, test = load_dataset("stl10", stl10_dir[0])
    splits = evaluation_sets("stl10", train, test)
    encoder = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten())
    normalize = augmentation_for("stl10", train).normalize
    results = evaluate_backbone(
        encoder,
        splits.train,
        splits.test,
        normalize,
        knn_k=(3,),
        device=torch.device("cpu"),
        amp=False,
    )
    assert 0.0 <= results["linear_top1"] <= 1.0 and (splits.train.labels >= 0).all()
