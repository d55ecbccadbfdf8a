"""benchmarks/train_throughput.py: the rows, the host-sync count, the warm-up and the profile, on digits."""

import importlib.util
import itertools
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"
TINY = [
    "--data",
    "digits",
    "--device",
    "cpu",
    "--batch-size",
    "32",
    "--steps",
    "1",
    "--repeats",
    "1",
    "--warmup",
    "1",
    "--warmup-windows",
    "1",
]


def load_script():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up in sys.modules while the class is being made.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_rows_and_host_syncs(capsys):
    script = load_script()
    results = script.main([*TINY, "--quick"])
    out = capsys.readouterr().out
    expected = [row.name for row in script.ROWS if not row.compiled]
    assert [result.name for result in results] == expected
    for name in expected:
        assert f"| {name} | " in out
    syncs = {result.name: result.syncs for result in results}
    # The engine's ELBO (vprob.models.elbo) never waits for the device...
    assert syncs["vsimclr full step (kl=bound)"].per_step == 0
    assert syncs["vsimclr full step (kl=exact)"].per_step == 0  # Trace_ELBO's form, also sync-free
    assert syncs["simclr full step"].per_step == 0
    # ...where Pyro's ELBO.differentiable_loss does, 4 times a step: torch_item of the particle's loss and of
    # the surrogate, warn_if_nan in the forward pass and again in its backward hook. Hence vprob's own ELBO.
    assert syncs["vsimclr full step with pyro's ELBO (kl=bound)"].per_step > 0
    # AdamW's step counters are read with .item() but live on the host: seen, and not counted as syncs.
    assert syncs["vsimclr full step (kl=bound)"].counter_reads > 0


def test_select_rows():
    script = load_script()
    names = [row.name for row in script.select_rows(script.ROWS, ["vsimclr full step"], False, False)]
    assert names == [
        "vsimclr full step (kl=bound)",
        "vsimclr full step with pyro's ELBO (kl=bound)",
        "vsimclr full step (kl=exact)",
        "vsimclr full step compiled (kl=bound)",
        "vsimclr full step compiled with pyro's ELBO (kl=bound)",
    ]
    quick = script.select_rows(script.ROWS, ["vsimclr full step"], True, False)
    assert [row.name for row in quick] == names[:3]
    compiled = script.select_rows(script.ROWS, None, False, True)
    assert compiled and all(row.compiled for row in compiled)
    assert script.select_rows(script.ROWS, ["no such row"], False, False) == []


def test_warm_up_waits_until_windows_agree():
    script = load_script()
    # Steps of 80, 60, 40 ms, then 20 ms for good: the minimum (2 steps) is met while they still shrink.
    durations = itertools.chain([0.08, 0.06, 0.04], itertools.repeat(0.02))
    warm = script.warm_up(
        lambda: time.sleep(next(durations)),
        script.torch.device("cpu"),
        min_steps=2,
        min_seconds=0,
        window=1,
        max_windows=10,
    )
    assert warm.settled and warm.steps >= 5
    # Never settling: 5, 15, 45, ... ms; it stops after max_windows more windows and says so.
    moving = iter([0.005 * 3**k for k in range(10)])
    warm = script.warm_up(
        lambda: time.sleep(next(moving)),
        script.torch.device("cpu"),
        min_steps=1,
        min_seconds=0,
        window=1,
        max_windows=3,
    )
    assert warm.settled is False and warm.steps == 4
    assert "NOT settled" in warm.describe()


def test_profile_writes_a_trace(tmp_path, capsys):
    script = load_script()
    script.main(
        [
            *TINY,
            "--rows",
            "vsimclr full step (kl=bound)",
            "--profile",
            "--profile-steps",
            "1",
            "--profile-dir",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert "===== profile: vsimclr full step (kl=bound) (1 steps) =====" in out
    assert "Self CPU" in out and "host (CPU wall) per step" in out
    assert (tmp_path / "vsimclr-full-step-kl-bound.json").stat().st_size > 0
