import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_dtype_and_threads():
    """Each test starts from a fixed seed and float32 default (geomstats may switch it to float64), with one
    intra-op thread: under ``pytest -n 2`` two workers with two threads each oversubscribed the 2 cores and
    made small-tensor tests several times slower (subprocesses and notebook kernels set their own)."""
    torch.manual_seed(0)
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """The training split of scikit-learn's bundled digits (an ImageSet)."""
    from vprob.data import load_digits

    return load_digits()[0]


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
