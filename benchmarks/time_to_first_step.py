"""Time to first step: how long a fresh process takes from start to the first augmented training batch, for
a data set on disk, on the first run (empty decoded-set cache) and on the next (cache filled).

    python benchmarks/time_to_first_step.py --data cifar10 --data-dir /tmp/vprob-bench/cifar10-tv
    python benchmarks/time_to_first_step.py --make-stl10 /tmp/vprob-bench/stl10     # STL-10-sized, random
    python benchmarks/time_to_first_step.py --data stl10 --data-dir /tmp/vprob-bench/stl10
    python benchmarks/time_to_first_step.py --make-image-folder /tmp/vprob-bench/folder --images 20000

Each run is a new Python process (``python -c``) that imports vprob, loads the set with
``vprob.data.load_dataset`` (decoding, or reading the cache) and augments one batch of two views with the
data set's recipe; it prints the seconds of each part. The model's first step is not included (it depends
on the backbone, not on the data). Runs share one cache folder (``--cache-dir``, emptied before the first
run), so run 1 is a first run and later runs are cached runs. The source files stay in the OS page cache
between runs (nothing here drops it), so for raw formats (pickles, STL-10 binary) runs differ little.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from vprob.data import augmentation_for, load_dataset
t1 = time.perf_counter()
train, test = load_dataset(sys.argv[1], sys.argv[2], "cpu", cache_dir=sys.argv[3])
t2 = time.perf_counter()
augment = augmentation_for(sys.argv[1], train)
g = torch.Generator().manual_seed(0)
batch = train.images[torch.randperm(len(train), generator=g)[:int(sys.argv[4])]]
views = [augment(batch, g) for _ in range(2)]
t3 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, load_s=t2 - t1, first_batch_s=t3 - t2, total_s=t3 - t0,
                      train=len(train), test=len(test), image_size=train.image_size)))
"""


def time_runs(data: str, data_dir: str, cache_dir: Path, runs: int, batch: int, threads: int) -> list[dict]:
    shutil.rmtree(cache_dir, ignore_errors=True)
    out = []
    for i in range(runs):
        cmd = [sys.executable, "-c", SNIPPET, data, data_dir, str(cache_dir), str(batch)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        record = json.loads(result.stdout.strip().splitlines()[-1])
        record["run"] = "first" if i == 0 else "cached"
        out.append(record)
        print(json.dumps(record), flush=True)
    return out


def make_stl10(root: Path, train: int, unlabeled: int, test: int, seed: int = 0) -> None:
    """Random images in the STL-10 binary layout (sizes as the real set unless given)."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("unlabeled", unlabeled), ("test", test)):
        with open(folder / f"{split}_X.bin", "wb") as f:
            for start in range(0, n, 4096):
                rng.integers(0, 256, (min(4096, n - start) * 3 * 96 * 96,), dtype=np.uint8).tofile(f)
        if split != "unlabeled":
            rng.integers(1, 11, n, dtype=np.uint8).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")


def make_image_folder(root: Path, images: int, size: int, classes: int = 10, seed: int = 0) -> None:
    """Smooth random JPEGs (a random low-resolution pattern upsampled: compressible, like photographs),
    ``images`` in train and a tenth as many in val, ``classes`` folders each."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", images), ("val", max(classes, images // 10))):
        for i in range(n):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"{i}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="registered data set name")
    parser.add_argument("--data-dir")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "vprob-bench-cache")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=512, help="images in the first batch")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the timed process")
    parser.add_argument("--out", type=Path, help="append the records (JSON lines) to this file")
    parser.add_argument("--make-stl10", type=Path, metavar="ROOT", help="write an STL-10-sized random set")
    parser.add_argument("--make-image-folder", type=Path, metavar="ROOT")
    parser.add_argument("--images", type=int, default=20_000, help="--make-image-folder: train images")
    parser.add_argument("--size", type=int, default=64, help="--make-image-folder: image size")
    args = parser.parse_args()
    if args.make_stl10:
        make_stl10(args.make_stl10, 5_000, 100_000, 8_000)
        return
    if args.make_image_folder:
        make_image_folder(args.make_image_folder, args.images, args.size)
        return
    if not args.data or not args.data_dir:
        parser.error("--data and --data-dir are required (or --make-stl10 / --make-image-folder)")
    records = time_runs(args.data, args.data_dir, args.cache_dir, args.runs, args.batch, args.threads)
    if args.out:
        with open(args.out, "a") as f:
            for r in records:
                f.write(json.dumps({"data": args.data, "data_dir": args.data_dir, **r}) + "\n")


if __name__ == "__main__":
    main()
