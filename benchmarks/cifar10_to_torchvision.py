"""Write torchvision's CIFAR-10 layout (cifar-10-batches-py: pickled dicts with bytes keys, protocol 2, as the
original archive) from the project's JPEG archives, for benchmarks and tests of the torchvision reader.

    python benchmarks/cifar10_to_torchvision.py ../shared/data/cifar10 /tmp/cifar10-tv

The pixels are the decoded JPEGs (not the original CIFAR-10 pixels, which the archives re-encoded).
"""

import argparse
import pickle
from pathlib import Path

from vprob.data import load_cifar10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz_dir", help="folder of train.npz and test.npz")
    parser.add_argument("root", help="output root: ROOT/cifar-10-batches-py/ is written")
    args = parser.parse_args()
    train, test = load_cifar10(args.npz_dir)
    folder = Path(args.root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, images, labels) -> None:
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels.tolist(),
            b"data": images.reshape(len(images), -1).numpy(),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(len(images))],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))

    per = len(train) // 5
    for i in range(5):
        part = slice(i * per, (i + 1) * per)
        write(f"data_batch_{i + 1}", train.images[part], train.labels[part])
    write("test_batch", test.images, test.labels)
    meta = {
        b"num_cases_per_batch": per,
        b"num_vis": 3072,
        b"label_names": [c.encode() for c in train.classes],
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
