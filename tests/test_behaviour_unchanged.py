"""Fixed-seed digits runs give the numbers recorded before the registries refactor (tests/golden/).

The golden file was written by ``tests/golden/record_digits.py`` with the engine as it was before methods,
options and data sets moved to registries; the same seeds must give the same losses at every step and the
same kNN and linear accuracies. SimCLR, VSimCLR and VJE run in the fast path; the other methods in slow."""

import importlib.util
import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def _recorder():
    spec = importlib.util.spec_from_file_location("record_digits", GOLDEN / "record_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAST = ("simclr", "vsimclr", "vje")
SLOW = ("supcon", "projnce", "cct", "vsimclr-exact", "vsupcon")


@pytest.mark.parametrize("case", [*FAST, *(pytest.param(c, marks=pytest.mark.slow) for c in SLOW)])
def test_same_seed_same_numbers_as_before_the_refactor(tmp_path, case):
    recorder = _recorder()
    expected = json.loads((GOLDEN / "digits_runs.json").read_text())["runs"][case]
    method, options = recorder.CASES[case]
    got = recorder.run_case(method, options, str(tmp_path / "run"))
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5, abs=1e-6)
    for key in ("knn_top1_k200_weighted", "knn_top1_k10_majority", "linear_top1"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
