"""The configuration of a training run: the engine's options (the fields of :class:`TrainConfig`) and the
method's own options (declared by the method, :mod:`vprob.methods`), resolved against the data set's
defaults (:mod:`vprob.data.registry`).

Every value has one declaration: a ``TrainConfig`` field (with its help and check) or a method's
:class:`vprob.options.Option`. The command line, ``config.json`` and validation are generated from them.
Precedence for a method option: the value given > the data set's default (if it has one for that name) >
the method's default.
"""

from __future__ import annotations

import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch import nn

from vprob.data.registry import DATASETS, get_dataset
from vprob.methods import METHODS, get_method
from vprob.nets import BACKBONE_NAMES, make_backbone
from vprob.optim import OPTIMIZERS
from vprob.options import Option


def _engine(help: str, default: Any = None, type: type | None = None, **option: Any) -> Any:
    """A ``TrainConfig`` field declared as an :class:`Option` (name and type come from the field)."""
    return field(default=default, metadata={"help": help, "type": type, **option})


def _positive(value: Any) -> bool:
    return value > 0


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` engine fields take the data set's default; ``options`` holds
    the method's options (missing ones take the data set's or the method's default). Build one from flat
    keywords with :func:`make_config`; :meth:`resolved` fills and validates everything."""

    method: str = _engine("training method", "vsimclr", str)
    data: str = _engine("data set", "digits", str)
    data_dir: str | None = _engine("data folder (CIFAR-10: the folder of train.npz and test.npz)", type=str,
                                   nullable=True)
    epochs: int | None = _engine("training epochs", type=int, check=_positive, requirement="> 0")
    batch_size: int | None = _engine("images per step (global, over every process)", type=int,
                                     check=_positive, requirement="> 0")
    backbone: str | None = _engine("encoder network", type=str, choices=BACKBONE_NAMES)
    optimizer: str | None = _engine("optimizer", type=str, choices=OPTIMIZERS)
    lr: float | None = _engine("learning rate of the global batch", type=float, check=_positive,
                               requirement="> 0")
    weight_decay: float | None = _engine("weight decay (not applied to biases and normalization)", type=float,
                                         check=lambda v: v >= 0, requirement=">= 0")
    warmup_epochs: int | None = _engine("linear warm-up epochs before the cosine schedule", type=int,
                                        check=lambda v: v >= 0, requirement=">= 0")
    device: str = _engine("auto, cpu, cuda, cuda:1, ...", "auto", str)
    seed: int = _engine("random seed (weights, batches, augmentation)", 0, int)
    amp: bool | None = _engine("bf16 autocast (default: on CUDA only)", type=bool, nullable=True)
    channels_last: bool | None = _engine("channels-last memory format (default: on CUDA only)", type=bool,
                                         nullable=True)
    compile: bool = _engine("torch.compile the encoder and the augmentation", False, bool)
    checkpoint_every: int = _engine("epochs between checkpoints", 1, int, check=_positive, requirement="> 0")
    log_every: int = _engine("steps between metric lines", 10, int, check=_positive, requirement="> 0")
    knn_k: tuple[int, ...] = _engine("neighbours of the kNN evaluation (> 10: weighted vote)", (200, 10), int,
                                     many=True, check=_positive, requirement="> 0")
    skip_nonfinite: bool = _engine("skip steps with a non-finite loss or gradient instead of stopping",
                                   False, bool)
    sync_bn: bool = _engine("with torchrun on CUDA: synchronize BatchNorm statistics", False, bool)
    max_steps: int | None = _engine("stop after this many steps (the schedule still spans every epoch)",
                                    type=int, check=_positive, requirement="> 0", nullable=True)
    run_dir: str | None = _engine("output folder (default: runs/METHOD-DATA-TIMESTAMP)", type=str,
                                  nullable=True)
    normal_class: int | None = _engine("train on this class only (one-class anomaly protocol)", type=int,
                                       check=lambda v: v >= 0, requirement="a class index >= 0",
                                       nullable=True)
    options: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        """A copy with every default filled in and every value validated (ValueError naming the value)."""
        method, spec = get_method(self.method), get_dataset(self.data)
        values = {key: value for key, value in asdict(self).items() if key != "options"}
        for key, default in spec.train_defaults.items():
            if key in values and values[key] is None:
                values[key] = default
        for option in engine_options():
            if option.name in ("method", "data"):
                continue
            values[option.name] = option.validate(values[option.name], "engine")
        return TrainConfig(**values, options=resolve_method_options(method, self.options,
                                                                    spec.train_defaults))

    @property
    def num_views(self) -> int:
        """Views per image of this configuration's method."""
        fixed = get_method(self.method).capabilities.num_views
        return fixed if fixed is not None else self.options.get("num_views", 2)


def engine_options() -> tuple[Option, ...]:
    """The :class:`Option` of every ``TrainConfig`` field (but ``options``)."""
    result = []
    for f in fields(TrainConfig):
        if f.name == "options":
            continue
        meta = dict(f.metadata)
        nullable = meta.pop("nullable", False) or f.default is None
        default = f.default if f.default is not MISSING else None
        result.append(Option(f.name, meta.pop("type"), default, meta.pop("help"), nullable=nullable, **meta))
    return tuple(result)


def resolve_method_options(method: type, given: dict[str, Any], data_defaults: dict[str, Any]) -> dict:
    """The method's options: ``given`` values, else the data set's defaults, else the method's; unknown or
    inapplicable names are refused with a message naming the method and its options."""
    declared = {option.name: option for option in method.options}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"option(s) {', '.join(unknown)} do not apply to method {method.name!r}; its "
                         f"options are: {', '.join(declared) or 'none'}")
    resolved = {}
    for name, option in declared.items():
        value = given[name] if name in given else data_defaults.get(name, option.default)
        resolved[name] = option.validate(value, f"method {method.name}")
    return resolved


def make_config(**values: Any) -> TrainConfig:
    """A ``TrainConfig`` from flat keywords: engine fields by name, everything else a method option
    (``make_config(method="cct", num_views=5, t_pos=1.0, epochs=10)``); checked by :meth:`resolved`."""
    engine = {f.name for f in fields(TrainConfig)} - {"options"}
    options = dict(values.pop("options", None) or {})
    options.update({key: value for key, value in values.items() if key not in engine})
    return TrainConfig(**{key: value for key, value in values.items() if key in engine}, options=options)


# The flat layout of checkpoints written before the method registry: method options at the top level,
# VJE's with a "vje_" prefix, and values for options the method did not have.
_LEGACY_METHOD_KEYS = ("dim", "head_hidden", "tau", "kl", "beta", "num_views", "projection", "t_pos", "t_neg",
                       "detach_weights", "chunk_size")


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a dict such as a run's ``config.json`` (also the flat layout of runs saved before
    the method registry); unknown keys are refused."""
    if not isinstance(values, dict):
        raise ValueError(f"a configuration must be a mapping, got {type(values).__name__}")
    values = dict(values)
    if "options" not in values:  # the pre-registry layout
        method = get_method(values.get("method", TrainConfig.method))
        legacy = {key: values.pop(key) for key in list(values)
                  if key in _LEGACY_METHOD_KEYS or key.startswith("vje_")}
        legacy = {key.removeprefix("vje_"): value for key, value in legacy.items()}
        values["options"] = {k: v for k, v in legacy.items() if k in method.option_names()}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config keys: {unknown}")
    if values.get("knn_k") is not None:
        values["knn_k"] = tuple(values["knn_k"])
    return TrainConfig(**values)


def build_model(config: TrainConfig, gather: bool = False) -> nn.Module:
    """The model of a resolved config (backbone + method), on CPU; ``gather``: contrast against every
    process's embeddings (multi-process training)."""
    return get_method(config.method).from_options(make_backbone(config.backbone), config.options, gather)


def default_run_dir(config: TrainConfig, prefix: str = "") -> Path:
    return Path("runs") / f"{prefix}{config.method}-{config.data}-{time.strftime('%Y%m%d-%H%M%S')}"


def with_anomaly_defaults(config: TrainConfig) -> TrainConfig:
    """``config`` with the data set's one-class defaults where it leaves engine values open."""
    defaults = get_dataset(config.data).anomaly_defaults
    return replace(config, **{key: value for key, value in defaults.items() if getattr(config, key) is None})


__all__ = ["DATASETS", "METHODS", "TrainConfig", "build_model", "config_from_dict", "default_run_dir",
           "engine_options", "make_config", "resolve_method_options", "with_anomaly_defaults"]
