"""``vprob train --config FILE``: a run repeated from its config.json, a user's YAML with flags on top,
unknown keys refused, and the rule for paths read from a file."""

from __future__ import annotations

import json
import os

import pytest

from vprob.cli import main
from vprob.config import load_config_file

FLAGS = ["--device", "cpu", "--no-progress"]


def saved(run_dir):
    return json.loads((run_dir / "config.json").read_text())


def test_a_run_repeated_from_its_config_json_with_flags_on_top(tmp_path, capsys):
    first = tmp_path / "first"
    assert (
        main(
            [
                "train",
                "--method",
                "simclr",
                "--epochs",
                "1",
                "--batch-size",
                "256",
                "--dim",
                "8",
                "--tau",
                "0.3",
                "--max-steps",
                "2",
                "--knn-k",
                "10",
                "--run-dir",
                str(first),
                *FLAGS,
            ]
        )
        == 0
    )
    second = tmp_path / "second"
    capsys.readouterr()
    assert (
        main(
            ["train", "--config", str(first / "config.json"), "--run-dir", str(second), "--dim", "16", *FLAGS]
        )
        == 0
    )
    # The record's own run_dir is never followed (that folder holds a checkpoint): the note says so.
    assert "record: its run_dir" in capsys.readouterr().err
    a, b = saved(first), saved(second)
    assert b["options"]["dim"] == 16 and b["options"]["tau"] == 0.3 and b["method"] == "simclr"
    a["options"]["dim"], a["run_dir"] = 16, str(second)
    assert b == a  # the effective config is what is saved


def test_a_users_yaml_file_with_flat_method_options(tmp_path, monkeypatch):
    pytest.importorskip("yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(
        "method: simclr\nepochs: 1\nbatch_size: 256\nmax_steps: 1\n"
        "dim: 8\ntau: 0.25\nknn_k: [10]\nrun_dir: runs/mine\n"
    )
    assert main(["train", "--config", "mine.yaml", "--tau", "0.5", *FLAGS]) == 0
    config = saved(tmp_path / "runs" / "mine")
    assert config["options"]["tau"] == 0.5 and config["options"]["dim"] == 8 and config["epochs"] == 1


def test_unknown_keys_and_config_with_resume_are_refused(tmp_path, capsys):
    (tmp_path / "typo.json").write_text(json.dumps({"method": "simclr", "epoch": 3}))
    assert main(["train", "--config", str(tmp_path / "typo.json"), *FLAGS]) == 2
    assert "unknown keys ['epoch']" in capsys.readouterr().err
    (tmp_path / "wrong.json").write_text(json.dumps({"method": "simclr", "df": 3.0}))
    assert main(["train", "--config", str(tmp_path / "wrong.json"), *FLAGS]) == 2
    assert "do not apply to method 'simclr'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "typo.json"), "--resume", "--run-dir", "x"]) == 2
    assert "--config and --resume" in capsys.readouterr().err


def test_paths_in_config_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"run_dir": "runs/a", "init_from": "w.pt"}))
    config, notes = load_config_file(own)
    assert config.run_dir == os.path.join("runs", "a") and config.init_from == "w.pt" and not notes
    own.write_text(json.dumps({"run_dir": str(tmp_path / "elsewhere")}))  # the user's own: absolute is fine
    assert load_config_file(own)[0].run_dir == str(tmp_path / "elsewhere")
    for escaping in ("../outside", "runs/../../outside"):
        own.write_text(json.dumps({"run_dir": escaping}))
        with pytest.raises(ValueError, match="must stay inside"):
            load_config_file(own)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    own.write_text(json.dumps({"run_dir": "link/x"}))
    with pytest.raises(ValueError, match="leads out of"):
        load_config_file(own)
    # A run folder's record: the paths it names are dropped, whatever they are.
    record = tmp_path / "run"
    record.mkdir()
    (record / "metrics.jsonl").write_text("")
    (record / "config.json").write_text(
        json.dumps({"run_dir": "/etc", "init_from": "/tmp/x.pt", "data_dir": "data"})
    )
    config, notes = load_config_file(record / "config.json")
    assert config.run_dir is None and config.init_from is None and config.data_dir == "data"
    assert "run_dir and init_from are not used" in notes[0]
