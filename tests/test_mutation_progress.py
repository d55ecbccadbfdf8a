"""A training run's progress (vprob.engine.progress) under a scripted clock: the bar's settings, the metrics
records (keys, order, image rate computed by hand), what reaches TensorBoard and the bar, the rate window
after an evaluation, the final scalars and the time budget checked at checkpoints. tqdm, TensorBoard's writer
and the clock are replaced by recorders; the metrics file is real and read back with json. Written for #19
(mutation testing of this module against the training tests took minutes per mutant)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from vprob import distributed
from vprob.engine import progress as progress_module
from vprob.engine.progress import Progress
from vprob.engine.run_folder import RunFolder


class _Bar:
    """tqdm's stand-in: its keyword arguments and every call."""

    made: list[_Bar] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple] = []
        _Bar.made.append(self)

    def set_postfix(self, *args, **kwargs) -> None:
        self.calls.append(("set_postfix", [dict(a) for a in args], kwargs))

    def update(self, *args) -> None:
        self.calls.append(("update", args))

    def close(self) -> None:
        self.calls.append(("close",))


class _Board:
    """MetricsWriter's stand-in."""

    made: list[_Board] = []

    def __init__(self, *args) -> None:
        self.args, self.records, self.closed = args, [], 0
        _Board.made.append(self)

    def write(self, record) -> None:
        self.records.append(dict(record))

    def close(self) -> None:
        self.closed += 1


class _Clock:
    """perf_counter returning the scripted times in order."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


@pytest.fixture
def fakes(monkeypatch):
    import tqdm.auto

    _Bar.made, _Board.made = [], []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    monkeypatch.setattr(progress_module, "MetricsWriter", _Board)

    def clock(*times: float) -> _Clock:
        c = _Clock(*times)
        monkeypatch.setattr(progress_module.time, "perf_counter", c)
        return c

    return clock


def _progress(run, step=10, batch_size=32, show=False, budget_s=None, tensorboard=False, total=100):
    return Progress(run, total, step, batch_size, "simclr", show, budget_s, tensorboard)


def _lines(run: RunFolder) -> list[dict]:
    return [json.loads(line) for line in run.metrics_path.read_text().splitlines()]


def test_the_bar_and_its_settings(tmp_path, fakes, monkeypatch):
    fakes(0.0)
    _progress(RunFolder(tmp_path), step=10, total=100, show=True)
    assert _Bar.made[-1].kwargs == dict(
        total=100, initial=10, disable=False, unit="step", desc="simclr", dynamic_ncols=True
    )
    fakes(0.0)
    _progress(RunFolder(tmp_path), show=False)
    assert _Bar.made[-1].kwargs["disable"] is True


@pytest.mark.parametrize("tty", [True, False])
def test_show_none_follows_whether_stderr_is_a_terminal(tmp_path, fakes, monkeypatch, tty):
    class Stream:
        def isatty(self):
            return tty

        def write(self, text):
            return len(text)

        def flush(self):
            pass

    fakes(0.0)
    monkeypatch.setattr(sys, "stderr", Stream())
    _progress(RunFolder(tmp_path), show=None)
    assert _Bar.made[-1].kwargs["disable"] is (not tty)


def test_tensorboard_only_when_asked_and_on_rank0(tmp_path, fakes):
    fakes(0.0, 0.0, 0.0)
    assert _progress(RunFolder(tmp_path), tensorboard=False).board is None
    assert _progress(RunFolder(tmp_path, rank=1, world_size=2), tensorboard=True).board is None
    progress = _progress(RunFolder(tmp_path), step=7, tensorboard=True)
    assert progress.board is _Board.made[-1] and len(_Board.made) == 1
    assert _Board.made[-1].args == (tmp_path, 7)


def test_records_rate_postfix_and_window(tmp_path, fakes):
    """Start at step 10 at t = 100 with batches of 32: step 14 logged at t = 102 is 4 * 32 / 2 = 64 images/s;
    with an evaluation (extra) the window restarts at the clock read after it (t = 105), not at t = 102."""
    run = RunFolder(tmp_path)
    run.prepare({}, resume=False)
    fakes(100.0, 102.0, 105.0, 107.0, 107.0)
    stats = {"loss": torch.tensor(1.23456), "kl": torch.tensor(0.5, dtype=torch.float64)}
    with _progress(run, step=10, batch_size=32, tensorboard=True) as progress:
        record = progress.log(14, 0.25, 0.1, stats, {"online_knn_top1": 0.5, "other": 0.75})
        assert record == {
            "step": 14,
            "epoch": 0.25,
            "lr": 0.1,
            "images_per_s": 64.0,
            "loss": pytest.approx(1.23456),
            "kl": 0.5,
            "online_knn_top1": 0.5,
            "other": 0.75,
        }
        assert list(record) == [
            "step",
            "epoch",
            "lr",
            "images_per_s",
            "loss",
            "kl",
            "online_knn_top1",
            "other",
        ]
        assert all(type(v) in (int, float) for v in record.values())
        assert _lines(run) == [record]  # flushed: readable while the file is open
        bar = _Bar.made[-1]
        assert bar.calls[-1] == ("set_postfix", [{"loss": "1.2346", "img_s": "64", "knn": "0.500"}], {})
        # window from t = 105 at step 14: step 20 at t = 107 is 6 * 32 / 2 = 96 images/s
        second = progress.log(20, 0.5, 0.05, {"loss": torch.tensor(2.0)}, {})
        assert second["images_per_s"] == 96.0
        assert list(second) == ["step", "epoch", "lr", "images_per_s", "loss"]
        assert bar.calls[-1] == ("set_postfix", [{"loss": "2.0000", "img_s": "96", "knn": "0.500"}], {})
        # no evaluation: the window restarts at the same clock read (t = 107), which is the only one taken
        assert progress.window_start == 107.0 and progress.window_step == 20
        board = _Board.made[-1]
        assert board.records == [record, second]
    assert _lines(run) == [record, second]
    assert bar.calls[-1] == ("close",)
    assert board.closed == 1


def test_rate_thousands_separator_and_zero_elapsed_time(tmp_path, fakes):
    run = RunFolder(tmp_path)
    run.prepare({}, resume=False)
    fakes(0.0, 0.5, 0.5, 0.5)
    with _progress(run, step=0, batch_size=256) as progress:
        record = progress.log(10, 1.0, 0.1, {"loss": torch.tensor(0.0)}, {})
        assert record["images_per_s"] == 5120.0
        assert _Bar.made[-1].calls[-1][1] == [{"loss": "0.0000", "img_s": "5,120"}]
        # no time since the last record: divided by 1e-9 s, not by zero
        record = progress.log(12, 1.2, 0.1, {"loss": torch.tensor(0.0)}, {})
        assert record["images_per_s"] == pytest.approx(2 * 256 / 1e-9, rel=1e-12)


def test_log_waits_for_the_gpu_only_when_a_stat_is_on_it(tmp_path, fakes, monkeypatch):
    class OnGpu:
        is_cuda = True

        def __float__(self):
            return 3.0

    waits = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: waits.append(True))
    run = RunFolder(tmp_path)
    run.prepare({}, resume=False)
    fakes(0.0, 1.0, 2.0)
    with _progress(run, step=0) as progress:
        progress.log(1, 0.0, 0.1, {"loss": torch.tensor(1.0)}, {})
        assert waits == []
        record = progress.log(2, 0.0, 0.1, {"loss": torch.tensor(1.0), "gpu": OnGpu()}, {})
        assert waits == [True] and record["gpu"] == 3.0


def test_other_ranks_write_no_metrics(tmp_path, fakes):
    run = RunFolder(tmp_path, rank=1, world_size=2)
    fakes(0.0, 1.0)
    with _progress(run, step=0) as progress:
        progress.log(1, 0.0, 0.1, {"loss": torch.tensor(1.0)}, {})
    assert not run.metrics_path.exists()


def test_advance_final_and_elapsed(tmp_path, fakes):
    run = RunFolder(tmp_path)
    run.prepare({}, resume=False)
    fakes(10.0, 12.5)
    with _progress(run, tensorboard=True) as progress:
        progress.advance()
        assert _Bar.made[-1].calls == [("update", (1,))]
        progress.final(
            50, {"knn_top1": 0.9, "linear_top1": 0.8, "loss": 1.0, "pretrain_s": 3.0, "knn_top5": 0.95}
        )
        assert _Board.made[-1].records == [
            {"step": 50, "final/knn_top1": 0.9, "final/linear_top1": 0.8, "final/knn_top5": 0.95}
        ]
        assert progress.elapsed() == 2.5
    fakes(0.0)
    without_board = _progress(run, tensorboard=False)
    without_board.final(50, {"knn_top1": 0.9})  # no writer: nothing to do, no error


def test_time_budget_assumes_the_next_stretch_as_long_as_the_last(tmp_path, fakes, monkeypatch):
    """Start at t = 1000, budget 100 s: a checkpoint at t + 40 (stretch 40) projects 80 <= 100, go on; at
    t + 70 (stretch 30) 100, not over; at t + 71 (stretch 1) 72; at t + 90 (stretch 19) 109 > 100, stop."""
    sent = []
    monkeypatch.setattr(distributed, "broadcast_from_rank0", lambda value: sent.append(value) or value)
    fakes(1000.0, 1040.0, 1070.0, 1071.0, 1090.0)
    progress = _progress(RunFolder(tmp_path), budget_s=100.0)
    assert [progress.out_of_time_after_checkpoint() for _ in range(4)] == [False, False, False, True]
    assert sent == [False, False, False, True]
    assert all(type(v) is bool for v in sent)


def test_time_budget_rank0_decides_and_no_budget_never_stops(tmp_path, fakes, monkeypatch):
    monkeypatch.setattr(distributed, "broadcast_from_rank0", lambda value: 1)
    fakes(0.0, 1.0)
    result = _progress(RunFolder(tmp_path), budget_s=100.0).out_of_time_after_checkpoint()
    assert result is True  # rank 0's answer, as a bool
    sent = []
    monkeypatch.setattr(distributed, "broadcast_from_rank0", lambda value: sent.append(value) or value)
    fakes(0.0, 1e6, 1e6 + 10.0, 1e6 + 11.0)
    progress = _progress(RunFolder(tmp_path), budget_s=None)
    assert progress.out_of_time_after_checkpoint() is False
    assert progress.last_save == 1e6  # the stretch is measured even without a budget
    progress.budget_s = 25.0
    # stretch from t = 1e6 to 1e6 + 10 (not from the start): elapsed + 10 > 25 anyway; then stretch 1 s
    assert progress.out_of_time_after_checkpoint() is True
    progress.budget_s = 1e6 + 12.5
    assert (
        progress.out_of_time_after_checkpoint() is False
    )  # 1e6 + 11 + a stretch of 1 s (since the last save)
    assert sent == [True, False]
