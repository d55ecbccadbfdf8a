#!/usr/bin/env bash
# Run once HERE (the development machine, which has network access) before a GPU session: the lent GPU
# machine is bare (torch 2.11, numpy 2.5, no pyro, geomstats or arviz) and reaches nothing outside.
#
#   bash benchmarks/device/prepare.sh [CIFAR10_DIR]       # default ../shared/data/cifar10
#
# Writes three git-ignored folders at the repository root, each named in a device call's `carry`:
#   .whl/           pyro-ppl + pyro-api (0.8 MB): every call needs them;
#   .whl-diagnose/  geomstats 2.8.0, arviz and its missing needs, and numpy 2.3 (geomstats fails to import
#                   with numpy >= 2.4): only `vprob diagnose` with its posterior section needs them (29 MB);
#   .data/cifar10/  the CIFAR-10 archives (54 MB).
# A call carries at most 64 MiB with the tree (2.7 MB): carry [".whl", ".data"] in the first call of a
# session and [".whl-diagnose"] in a later one; ignored folders stay on the machine while it is warm.
set -euo pipefail
cd "$(dirname "$0")/../.."
cifar="${1:-../shared/data/cifar10}"
for folder in /.whl/ /.whl-diagnose/ /.data/; do
    grep -qxF "$folder" .git/info/exclude 2>/dev/null || echo "$folder" >> .git/info/exclude
done
download() {  # wheels for the device's CPython 3.12 on x86-64 Linux
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$@"
}
download .whl pyro-ppl==1.9.2 pyro-api==0.1.2
download .whl-diagnose geomstats==2.8.0 arviz==0.23.4 xarray-einstats==0.9.1 h5netcdf==1.8.2 \
    platformdirs==4.14.7 numpy==2.3.5
mkdir -p .data
if [ ! -f .data/cifar10/train.npz ]; then
    cp -r "$cifar" .data/cifar10
fi
du -sh .whl .whl-diagnose .data
