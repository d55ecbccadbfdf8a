"""Named recipes: the settings a paper (or a reference implementation) trains with, selectable with one flag.

A recipe is a preset of options already declared elsewhere (the engine's ``TrainConfig`` fields and the
methods' options); ``vprob train --recipe NAME`` applies it. Precedence: a value given on the command line
(or to :func:`vprob.config.make_config`) > the recipe > the data set's default > the method's default. The
saved ``config.json`` names the recipe and holds every resolved value. Values a source does not state are
marked in ``choices`` and never presented as the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """A named preset.

    Attributes:
        name: the ``--recipe`` name.
        source: where the values come from.
        methods: the methods it is meant for (others are refused).
        values: option name -> value (engine fields and method options alike).
        by_data: per data set, values that replace those of ``values`` (CACR's t- differs on CIFAR-100).
        choices: the names in ``values`` that the source leaves open (our choice, said so).
    """

    name: str
    source: str
    methods: tuple[str, ...]
    values: dict[str, Any]
    by_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    choices: tuple[str, ...] = ()

    def values_for(self, method: str, data: str) -> dict[str, Any]:
        """The recipe's values for ``method`` on ``data``; ValueError if the recipe is not for the method."""
        if method not in self.methods:
            raise ValueError(f"recipe {self.name!r} is for methods {', '.join(self.methods)}, not {method!r}")
        return {**self.values, **self.by_data.get(data, {})}


_CONTRASTIVE = ("simclr", "vsimclr", "supcon", "vsupcon", "projnce")

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "simclr-cifar",
            "the common SimCLR CIFAR-10 recipe of the single-file SimCLR (dkobak/simclr-cifar10), the speed "
            "and accuracy yardstick of BENCHMARKS.md: SGD, lr 0.03 x batch/256, weight decay 5e-4, tau 0.5, "
            "a 1024-wide projector to d = 128, 100 epochs of batch 512",
            _CONTRASTIVE,
            dict(
                optimizer="sgd",
                lr=0.06,
                weight_decay=5e-4,
                tau=0.5,
                batch_size=512,
                epochs=100,
                dim=128,
                head_hidden=1024,
                warmup_epochs=2,
            ),
            choices=("warmup_epochs",),
        ),
        Recipe(
            "vcl-paper",
            "VCL (Jeong, Kim and Hero, 2025, 'Probabilistic Variational Contrastive Learning'): ResNet-18, "
            "batch 512, tau 0.07, AdamW, 500 epochs, the normalized KL with beta = 1 on the Gaussian bound. "
            "The learning rate, weight decay and projector width were not in the material available to us",
            ("vsimclr", "vsupcon", "simclr", "supcon"),
            dict(
                optimizer="adamw",
                tau=0.07,
                batch_size=512,
                epochs=500,
                lr=1e-3,
                weight_decay=1e-4,
                dim=128,
                head_hidden=512,
            ),
            choices=("lr", "weight_decay", "head_hidden"),
        ),
        Recipe(
            "supcon-paper",
            "SupCon's reference implementation (SupContrast, main_supcon.py, its CIFAR command): batch 1024, "
            "SGD lr 0.5 with cosine decay and 10 warm-up epochs for batches above 256, weight decay 1e-4, "
            "tau 0.1, 1000 epochs, a 128-d projection",
            ("supcon", "vsupcon"),
            dict(
                optimizer="sgd",
                lr=0.5,
                weight_decay=1e-4,
                tau=0.1,
                batch_size=1024,
                epochs=1000,
                warmup_epochs=10,
                dim=128,
            ),
        ),
        Recipe(
            "cacr-official",
            "CACR's official small-scale defaults (Zheng et al., 2021): K = 4 positives (5 views), t+ = 1.0, "
            "t- = 0.9 on CIFAR-10 and 2.0 on CIFAR-100 and STL-10, weights not detached",
            ("cct",),
            dict(num_views=5, t_pos=1.0, t_neg=0.9, detach_weights=False),
            by_data={"cifar100": dict(t_neg=2.0), "stl10": dict(t_neg=2.0)},
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    """The recipe ``name``; ValueError listing the known recipes otherwise."""
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}") from None
