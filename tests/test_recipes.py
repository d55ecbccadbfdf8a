"""Named recipes: presets of declared options, with the precedence given > recipe > data set > method."""

import json

import pytest

from vprob.cli import main
from vprob.config import make_config
from vprob.recipes import RECIPES


def test_a_recipe_sets_the_paper_s_values_over_the_data_set_s():
    config = make_config(method="vsimclr", data="cifar10", recipe="vcl-paper").resolved()
    assert (config.optimizer, config.lr, config.batch_size, config.epochs) == ("adamw", 1e-3, 512, 500)
    assert config.options["tau"] == 0.07  # the data set's default would be 0.5
    simclr = make_config(method="simclr", data="cifar10", recipe="simclr-cifar").resolved()
    values = (simclr.optimizer, simclr.lr, simclr.weight_decay, simclr.options["tau"])
    assert values == ("sgd", 0.06, 5e-4, 0.5)


def test_values_given_beside_a_recipe_win():
    config = make_config(method="supcon", recipe="supcon-paper", lr=0.1, tau=0.2).resolved()
    assert config.lr == 0.1 and config.options["tau"] == 0.2
    assert config.batch_size == 1024 and config.warmup_epochs == 10


def test_per_data_set_values_of_a_recipe():
    cifar10 = make_config(method="cct", data="cifar10", recipe="cacr-official").resolved().options
    cifar100 = make_config(method="cct", data="cifar100", recipe="cacr-official").resolved().options
    assert (cifar10["num_views"], cifar10["t_pos"], cifar10["t_neg"]) == (5, 1.0, 0.9)
    assert cifar100["t_neg"] == 2.0


def test_a_recipe_for_other_methods_is_refused():
    with pytest.raises(ValueError, match="recipe 'cacr-official' is for methods cct, not 'simclr'"):
        make_config(method="simclr", recipe="cacr-official").resolved()
    with pytest.raises(ValueError, match="unknown recipe"):
        make_config(method="simclr", recipe="byol-paper").resolved()


def test_every_recipe_resolves_for_every_method_it_names():
    for recipe in RECIPES.values():
        assert recipe.source and set(recipe.choices) <= set(recipe.values)
        for method in recipe.methods:
            make_config(method=method, data="cifar10", recipe=recipe.name).resolved()


def test_the_command_line_takes_a_recipe_and_config_json_records_it(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--method",
            "cct",
            "--recipe",
            "cacr-official",
            "--num-views",
            "3",
            "--max-steps",
            "1",
            "--batch-size",
            "64",
            "--dim",
            "8",
            "--device",
            "cpu",
            "--run-dir",
            str(run),
            "--no-progress",
        ]
    )
    assert code == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["recipe"] == "cacr-official"
    assert saved["options"]["num_views"] == 3 and saved["options"]["t_neg"] == 0.9
