"""The configuration of a training run: the engine's options (the fields of :class:`TrainConfig`) and the
method's own options (declared by the method, :mod:`vprob.methods`), resolved against the data set's
defaults (:mod:`vprob.data.registry`).

Every value has one declaration: a ``TrainConfig`` field (with its help and check) or a method's
:class:`vprob.options.Option`. The command line, ``config.json`` and validation are generated from them.
Precedence for a method option: the value given > the data set's default (if it has one for that name) >
the method's default.
"""

from __future__ import annotations

import os
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch import nn

from vprob.backbones import BACKBONES, STEMS, check_stem, make_backbone
from vprob.data.registry import DATASETS, get_dataset
from vprob.methods import METHODS, get_method
from vprob.optim import OPTIMIZERS
from vprob.options import Option
from vprob.recipes import RECIPES, get_recipe
from vprob.safe_io import read_config_file, safe_relative_path


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
    recipe: str | None = _engine(
        "a named recipe of a paper (vprob.recipes): its values replace the data "
        "set's defaults; values given beside it win",
        type=str,
        choices=tuple(RECIPES),
        nullable=True,
    )
    data_dir: str | None = _engine(
        "data folder: what torchvision would take as root (README, 'Your own data')", type=str, nullable=True
    )
    image_size: int | None = _engine(
        "resize the images to this size (default: the data set's); data sets decoded from files only",
        type=int,
        check=_positive,
        requirement="> 0",
        nullable=True,
    )
    cache_dir: str | None = _engine(
        "where decoded data sets are cached (default: $VPROB_CACHE_DIR, else ~/.cache/vprob)",
        type=str,
        nullable=True,
    )
    epochs: int | None = _engine("training epochs", type=int, check=_positive, requirement="> 0")
    batch_size: int | None = _engine(
        "images per step (global, over every process)", type=int, check=_positive, requirement="> 0"
    )
    # A check rather than fixed choices: backbones registered after import are valid too.
    backbone: str | None = _engine(
        f"encoder network: {', '.join(BACKBONES)} (vprob.backbones)",
        type=str,
        check=lambda v: v in BACKBONES,
        requirement="a registered backbone (vprob.backbones.BACKBONES)",
    )
    stem: str | None = _engine(
        "ResNet stem: cifar (3x3 stride-1 conv1, no max-pool) or imagenet (default: "
        "cifar up to 64 px, imagenet above)",
        type=str,
        choices=STEMS,
        nullable=True,
    )
    init_from: str | None = _engine(
        "start from the backbone weights in this file (vprob export's, or torchvision's state_dict .pth)",
        type=str,
        nullable=True,
    )
    optimizer: str | None = _engine("optimizer", type=str, choices=OPTIMIZERS)
    lr: float | None = _engine(
        "learning rate of the global batch", type=float, check=_positive, requirement="> 0"
    )
    weight_decay: float | None = _engine(
        "weight decay (not applied to biases and normalization)",
        type=float,
        check=lambda v: v >= 0,
        requirement=">= 0",
    )
    warmup_epochs: int | None = _engine(
        "linear warm-up epochs before the cosine schedule",
        type=int,
        check=lambda v: v >= 0,
        requirement=">= 0",
    )
    device: str = _engine("auto, cpu, cuda, cuda:1, ...", "auto", str)
    seed: int = _engine("random seed (weights, batches, augmentation)", 0, int)
    amp: bool | None = _engine("bf16 autocast (default: on CUDA only)", type=bool, nullable=True)
    channels_last: bool | None = _engine(
        "channels-last memory format (default: on CUDA only)", type=bool, nullable=True
    )
    compile: bool = _engine("torch.compile the encoder and the augmentation", False, bool)
    checkpoint_every: int = _engine("epochs between checkpoints", 1, int, check=_positive, requirement="> 0")
    log_every: int = _engine("steps between metric lines", 10, int, check=_positive, requirement="> 0")
    eval_every: int | None = _engine(
        "epochs between online kNN accuracies (k = 20, on <= 5,000 test images; "
        "0: never; default: 10 for images of 32 px and more, else never)",
        type=int,
        check=lambda v: v >= 0,
        requirement=">= 0",
        nullable=True,
    )
    tensorboard: bool = _engine(
        "also write every logged metric as TensorBoard events (RUN_DIR/tensorboard; "
        "pip install 'vprob[tensorboard]')",
        False,
        bool,
    )
    knn_k: tuple[int, ...] = _engine(
        "neighbours of the kNN evaluation (> 10: weighted vote)",
        (200, 10),
        int,
        many=True,
        check=_positive,
        requirement="> 0",
    )
    skip_nonfinite: bool = _engine(
        "skip steps with a non-finite loss or gradient instead of stopping", False, bool
    )
    sync_bn: bool = _engine("with torchrun on CUDA: synchronize BatchNorm statistics", False, bool)
    max_steps: int | None = _engine(
        "stop after this many steps (the schedule still spans every epoch)",
        type=int,
        check=_positive,
        requirement="> 0",
        nullable=True,
    )
    run_dir: str | None = _engine(
        "output folder (default: runs/METHOD-DATA-TIMESTAMP)", type=str, nullable=True
    )
    normal_class: int | None = _engine(
        "train on this class only (one-class anomaly protocol)",
        type=int,
        check=lambda v: v >= 0,
        requirement="a class index >= 0",
        nullable=True,
    )
    options: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        """A copy with every default filled in and every value validated (ValueError naming the value)."""
        method, spec = get_method(self.method), get_dataset(self.data)
        values = {key: value for key, value in asdict(self).items() if key != "options"}
        preset = get_recipe(self.recipe).values_for(self.method, self.data) if self.recipe else {}
        unknown = sorted(set(preset) - set(values) - set(method.option_names()))
        if unknown:
            raise ValueError(
                f"recipe {self.recipe!r} sets {', '.join(unknown)}, which method "
                f"{self.method!r} does not take"
            )
        defaults = {**spec.train_defaults, **preset}  # given > recipe > data set > method
        for key, default in defaults.items():
            if key in values and values[key] is None:
                values[key] = default
        for option in engine_options():
            if option.name in ("method", "data"):
                continue
            values[option.name] = option.validate(values[option.name], "engine")
        check_stem(values["backbone"], values["stem"])
        return TrainConfig(**values, options=resolve_method_options(method, self.options, defaults))

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
        raise ValueError(
            f"option(s) {', '.join(unknown)} do not apply to method {method.name!r}; its "
            f"options are: {', '.join(declared) or 'none'}"
        )
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
_LEGACY_METHOD_KEYS = (
    "dim",
    "head_hidden",
    "tau",
    "kl",
    "beta",
    "num_views",
    "projection",
    "t_pos",
    "t_neg",
    "detach_weights",
    "chunk_size",
)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a dict such as a run's ``config.json`` (also the flat layout of runs saved before
    the method registry); unknown keys are refused."""
    if not isinstance(values, dict):
        raise ValueError(f"a configuration must be a mapping, got {type(values).__name__}")
    values = dict(values)
    if "options" not in values:  # the pre-registry layout
        method = get_method(values.get("method", TrainConfig.method))
        legacy = {
            key: values.pop(key)
            for key in list(values)
            if key in _LEGACY_METHOD_KEYS or key.startswith("vje_")
        }
        legacy = {key.removeprefix("vje_"): value for key, value in legacy.items()}
        values["options"] = {k: v for k, v in legacy.items() if k in method.option_names()}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config keys: {unknown}")
    if values.get("knn_k") is not None:
        values["knn_k"] = tuple(values["knn_k"])
    return TrainConfig(**values)


def build_model(
    config: TrainConfig, gather: bool = False, image_shape: tuple[int, int, int] | None = None
) -> nn.Module:
    """The model of a resolved config (backbone + method), on CPU; ``gather``: contrast against every
    process's embeddings (multi-process training); ``image_shape``: the data's (C, H, W) the backbone is
    built for (default: the backbone's own, :attr:`vprob.backbones.BackboneSpec.default_shape`)."""
    channels, size = (None, None) if image_shape is None else (int(image_shape[0]), int(image_shape[-1]))
    backbone = make_backbone(config.backbone, image_size=size, channels=channels, stem=config.stem)
    return get_method(config.method).from_options(backbone, config.options, gather)


# The files a run folder holds besides its config.json: a config.json beside them is that run's own record.
_RUN_FOLDER_FILES = ("checkpoint.pt", "metrics.jsonl")
# Paths a run's own record names: never followed from it (the user names them again if wanted).
_RECORD_PATHS = ("run_dir", "init_from")


def load_config_file(path: str | os.PathLike) -> tuple[TrainConfig, list[str]]:
    """The configuration in a JSON or YAML file (``vprob train --config FILE``) and notes for the user.

    Read with :func:`vprob.safe_io.read_config_file` (plain data only) and :func:`config_from_dict`
    (unknown keys refused). Method options may sit in an ``options`` mapping (a saved ``config.json``) or at
    the top level beside the engine's (a hand-written file); a top-level name that is neither an engine
    field nor any method's option is refused.

    Paths: a file that sits in a run folder (beside ``checkpoint.pt`` or ``metrics.jsonl``) is that run's
    record, and the paths it names (``run_dir``, ``init_from``) are dropped with a note: repeating a run
    writes a new folder, and nothing read from a run folder decides where vprob writes or what it loads.
    Any other file is the user's own, like flags: an absolute ``run_dir`` is honoured, a relative one must
    stay inside the current folder (:func:`vprob.safe_io.safe_relative_path`; ``..`` is refused: write it
    absolute or pass ``--run-dir``). ``data_dir`` and ``init_from`` are read as given (only read, never
    written; weights load without running code).
    """
    path = Path(path)
    values = read_config_file(path)
    notes: list[str] = []
    if any((path.parent / name).exists() for name in _RUN_FOLDER_FILES):
        dropped = [key for key in _RECORD_PATHS if values.get(key) is not None]
        for key in dropped:
            values[key] = None
        if dropped:
            notes.append(
                f"{path} is a run folder's record: its {' and '.join(dropped)} are not used (pass "
                f"{' / '.join('--' + k.replace('_', '-') for k in dropped)} to set them)"
            )
        return config_from_dict(values), notes
    if "options" not in values:
        engine = {f.name for f in fields(TrainConfig)}
        method_names = {option.name for method in METHODS.values() for option in method.options}
        unknown = sorted(set(values) - engine - method_names)
        if unknown:
            raise ValueError(
                f"config file {path}: unknown keys {unknown} (neither engine options nor any "
                "method's options)"
            )
        values = {
            **{k: v for k, v in values.items() if k in engine},
            "options": {k: v for k, v in values.items() if k not in engine},
        }
    run_dir = values.get("run_dir")
    if isinstance(run_dir, str) and not Path(run_dir).is_absolute():
        values["run_dir"] = str(safe_relative_path(Path.cwd(), run_dir).relative_to(Path.cwd()))
    return config_from_dict(values), notes


def data_options(config: TrainConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`vprob.data.load_dataset` that ``config`` sets."""
    values = dict(image_size=config.image_size, cache_dir=config.cache_dir)
    return {key: value for key, value in values.items() if value is not None}


def default_run_dir(config: TrainConfig, prefix: str = "") -> Path:
    return Path("runs") / f"{prefix}{config.method}-{config.data}-{time.strftime('%Y%m%d-%H%M%S')}"


def with_anomaly_defaults(config: TrainConfig) -> TrainConfig:
    """``config`` with the data set's one-class defaults where it leaves engine values open."""
    defaults = get_dataset(config.data).anomaly_defaults
    return replace(config, **{key: value for key, value in defaults.items() if getattr(config, key) is None})


__all__ = [
    "DATASETS",
    "METHODS",
    "TrainConfig",
    "build_model",
    "config_from_dict",
    "default_run_dir",
    "engine_options",
    "load_config_file",
    "make_config",
    "resolve_method_options",
    "with_anomaly_defaults",
]
