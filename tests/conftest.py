import os

import pytest
import torch

# Under pytest-xdist every worker is a process of its own: one intra-op thread each keeps 2 workers on
# 2 cores from oversubscribing them (which made the suite several times slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_restore_dtype():
    """Each test starts from a fixed seed and float32 default (geomstats may switch it to float64)."""
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
