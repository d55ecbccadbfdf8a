"""The ``vprob`` command: ``vprob train``, ``vprob evaluate RUN_DIR``, ``vprob diagnose RUN_DIR``,
``vprob anomaly``, ``vprob export RUN_DIR --out FILE``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from vprob.checkpoint import CHECKPOINT_NAME, CheckpointError
from vprob.config import TrainConfig, engine_options, make_config
from vprob.data import DATASETS
from vprob.engine.tensorboard import MissingExtraError
from vprob.methods import METHODS, methods_with
from vprob.options import Option, add_arguments, given

# Errors a user can cause and fix: reported as one line and a non-zero exit, no traceback. (TypeError is
# not among them: vprob reports bad values as ValueError, so a TypeError is a bug and keeps its traceback.)
USER_ERRORS = (ValueError, OSError, CheckpointError, MissingExtraError)
# A time budget (--stop-after) ran out at a checkpoint: not an error; the same command with --resume goes on.
EXIT_PAUSED = 75  # EX_TEMPFAIL of sysexits.h: "try again later"

# Engine options the command line sets elsewhere (method, data: with the registries' choices) or not at all
# (run_dir and normal_class have their own flags; options is the method's).
_OWN_FLAGS = ("method", "data", "run_dir", "normal_class")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def method_options() -> dict[str, Option]:
    """Every option any registered method declares, once per name (methods sharing a name share its type)."""
    merged: dict[str, Option] = {}
    for method in METHODS.values():
        for option in method.options:
            seen = merged.setdefault(option.name, option)
            if (seen.type, seen.many) != (option.type, option.many):
                raise TypeError(
                    f"option {option.name!r} of method {method.name!r} has type "
                    f"{option.type.__name__}, another method declares {seen.type.__name__}"
                )
    return merged


def _method_help() -> dict[str, str]:
    """For each method option: which methods take it, and their help where it differs."""
    users: dict[str, dict[str, list[str]]] = {}
    for method in METHODS.values():
        for option in method.options:
            users.setdefault(option.name, {}).setdefault(option.help, []).append(method.name)
    suffix = {}
    for name, by_help in users.items():
        if len(by_help) == 1:
            suffix[name] = f" [{', '.join(next(iter(by_help.values())))}]"
        else:
            suffix[name] = " [" + "; ".join(f"{', '.join(m)}: {h}" for h, m in by_help.items()) + "]"
    return suffix


def _add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The engine's options and every method's, generated from their declarations."""
    engine = parser.add_argument_group("engine options (default: the data set's, see vprob.data.registry)")
    add_arguments(engine, [o for o in engine_options() if o.name not in _OWN_FLAGS + exclude])
    options = parser.add_argument_group(
        "method options (default: the data set's, else the method's; [the methods that take each])"
    )
    add_arguments(options, [o for o in method_options().values() if o.name not in exclude], _method_help())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vprob", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    methods = "; ".join(f"{name}: {method.summary}" for name, method in METHODS.items())

    train = commands.add_parser(
        "train",
        help="train a model (default: VSimCLR on the bundled digits, CPU, about a minute)",
        description=f"Methods: {methods}.",
    )
    # No argparse defaults for method and data: a --config file's values stand unless these are given.
    train.add_argument("--method", choices=tuple(METHODS), help=f"(default: {TrainConfig.method})")
    train.add_argument("--data", choices=tuple(DATASETS), help=f"(default: {TrainConfig.data})")
    train.add_argument("--run-dir", help="output folder (default: runs/METHOD-DATA-TIMESTAMP)")
    train.add_argument(
        "--config",
        metavar="FILE",
        help="start from the settings in this JSON/YAML file (a run's config.json repeats "
        "that run in a new folder); flags given beside it override",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    train.add_argument(
        "--stop-after",
        type=_positive_float,
        metavar="SECONDS",
        help="training time budget of this call (jobs with a wall-clock limit): stop at the "
        f"last checkpoint that fits, exit {EXIT_PAUSED}; --resume continues",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_arguments(train)

    evaluate = commands.add_parser("evaluate", help="kNN and linear-probe accuracy of a run's checkpoint")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data-dir", help="override the data folder stored in the run")
    evaluate.add_argument("--device", default="auto")

    diagnose = commands.add_parser(
        "diagnose", help="collapse, mutual information, uncertainty, OOD and posterior report of a run"
    )
    diagnose.add_argument("run_dir")
    diagnose.add_argument("--out-dir", help="report folder (default: RUN_DIR/report)")
    diagnose.add_argument("--data-dir", help="override the data folder stored in the run")
    diagnose.add_argument("--device", default="auto")
    diagnose.add_argument(
        "--max-images",
        type=_positive_int,
        default=5000,
        help="cap on the images used for spectra and the MI bound",
    )
    diagnose.add_argument(
        "--no-posterior",
        action="store_true",
        help="skip posterior sampling (arviz, geomstats): spectra, MI, uncertainty, OOD",
    )

    export = commands.add_parser(
        "export",
        help="write a run's trained backbone as a state_dict that torchvision's model loads",
        description="The backbone's state_dict, with the keys and shapes of the torchvision model of the "
        "same name without its classifier (fc / heads), and the run's config beside it "
        "(vprob.export). --init-from reads it back.",
    )
    export.add_argument("run_dir")
    export.add_argument("--out", required=True, metavar="FILE", help="the weights file to write")

    anomaly = commands.add_parser(
        "anomaly", help="one-class anomaly detection: train on one class, AUROC on the whole test set"
    )
    anomaly.add_argument("--method", choices=methods_with(needs_labels=False), default="vje")
    anomaly.add_argument("--data", choices=tuple(DATASETS), default="digits")
    which = anomaly.add_mutually_exclusive_group(required=True)
    which.add_argument("--normal-class", type=int, help="index of the normal class (0..9)")
    which.add_argument(
        "--all-classes", action="store_true", help="one run per class, and the mean AUROC over the classes"
    )
    anomaly.add_argument("--run-dir", help="output folder (default: runs/anomaly-METHOD-DATA-TIMESTAMP)")
    anomaly.add_argument(
        "--resume",
        action="store_true",
        help="continue the runs in --run-dir: finished classes are read back, others resume",
    )
    anomaly.add_argument(
        "--stop-after",
        type=_positive_float,
        metavar="SECONDS",
        help=f"training time budget of this call, shared by the classes; exit {EXIT_PAUSED} "
        "when it runs out, --resume continues",
    )
    anomaly.add_argument(
        "--num-pairs",
        type=_positive_int,
        default=8,
        help="augmented view pairs averaged by the likelihood score",
    )
    anomaly.add_argument(
        "--knn-k",
        type=_positive_int,
        default=1,
        help="the kNN score's neighbour rank (distance to the k-th nearest)",
    )
    anomaly.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Epochs and batch size default to the data set's one-class values (vprob.data.registry).
    _add_config_arguments(anomaly, exclude=("knn_k",))
    return parser


def _config(args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> TrainConfig:
    """The configuration the command line gives (flags not given take the configuration's defaults)."""
    engine = given(args, [o for o in engine_options() if o.name not in _OWN_FLAGS + exclude])
    options = given(args, [o for o in method_options().values() if o.name not in exclude])
    return make_config(
        method=args.method or TrainConfig.method,
        data=args.data or TrainConfig.data,
        run_dir=args.run_dir,
        **engine,
        **options,
    )


def _config_with_file(args: argparse.Namespace) -> TrainConfig:
    """The ``--config`` file's configuration with the flags given on this command line on top (method
    options the file holds for another method than a given ``--method`` are dropped)."""
    from vprob.config import load_config_file
    from vprob.methods import get_method

    base, notes = load_config_file(args.config)
    for note in notes:
        print(f"vprob train: note: {note}", file=sys.stderr)
    engine = given(args, [o for o in engine_options() if o.name not in _OWN_FLAGS])
    engine.update(
        {key: getattr(args, key) for key in ("method", "data", "run_dir") if getattr(args, key) is not None}
    )
    options = dict(base.options)
    if args.method is not None and args.method != base.method:
        options = {k: v for k, v in options.items() if k in get_method(args.method).option_names()}
    options.update(given(args, method_options().values()))
    return replace(base, **engine, options=options)


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from vprob.train import train

    if args.config and args.resume:
        raise ValueError(
            "--config and --resume do not go together: a resumed run continues with its own "
            "saved settings (flags given beside --resume override them)"
        )
    config = _config_with_file(args) if args.config else _config(args)
    if args.resume:
        config = _resumed_config(args, config)
    return train(
        config, resume=args.resume, progress=False if args.no_progress else None, stop_after_s=args.stop_after
    )


def _resumed_config(args: argparse.Namespace, given_config: TrainConfig) -> TrainConfig:
    """The run's own saved settings, with the flags given on this command line on top (a change that the
    checkpoint cannot continue, such as another method or batch size, is refused when the run resumes)."""
    from vprob.checkpoint import load_checkpoint
    from vprob.config import config_from_dict

    if not args.run_dir:
        raise ValueError("--resume needs --run-dir (the folder of the run to continue)")
    checkpoint = Path(args.run_dir) / CHECKPOINT_NAME
    if not checkpoint.exists():
        # A run stopped before the end of its first epoch has no checkpoint yet: say so plainly.
        raise CheckpointError(
            f"--resume: nothing to resume in {args.run_dir}: no checkpoint yet (a run writes its first "
            "at the end of its first epoch); start the run again without --resume"
        )
    saved = config_from_dict(load_checkpoint(checkpoint)["config"])
    engine = given(args, [o for o in engine_options() if o.name not in _OWN_FLAGS])
    engine.update(run_dir=args.run_dir, max_steps=args.max_steps)  # this call's, not the saved ones
    options = {**saved.options, **given(args, method_options().values())}
    return replace(saved, **engine, options=options)


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from vprob.runs import evaluate_run

    return evaluate_run(args.run_dir, data_dir=args.data_dir, device=args.device)


def _diagnose(args: argparse.Namespace) -> dict[str, Any]:
    from vprob.diagnose import diagnose_run

    report = diagnose_run(
        args.run_dir,
        out_dir=args.out_dir,
        device=args.device,
        data_dir=args.data_dir,
        max_images=args.max_images,
        posterior=not args.no_posterior,
    )
    # The headline numbers on the terminal; every number is in report.json.
    headline: dict[str, Any] = {}
    for part in ("backbone", "embedding", "posterior_samples"):
        rank = report.get("collapse", {}).get(part, {}).get("effective_rank")
        if isinstance(rank, float):
            headline[f"effective_rank_{part}"] = rank
        bound = report.get("mutual_information", {}).get(part, {}).get("mi_lower_bound_nats")
        if isinstance(bound, float):
            headline[f"mi_lower_bound_nats_{part}"] = bound
    print(f"report: {Path(report['out_dir']) / 'report.json'}")
    return {**headline, "run_dir": str(args.run_dir)}


def _export(args: argparse.Namespace) -> dict[str, Any]:
    from vprob.export import export_run

    metadata = export_run(args.run_dir, args.out)
    stem = f", {metadata['stem']} stem" if "stem" in metadata else ""
    print(f"exported the {metadata['backbone']} backbone{stem} (step {metadata['step']}) to {args.out}")
    return {"run_dir": str(args.run_dir)}


def _anomaly(args: argparse.Namespace) -> dict[str, Any]:
    from vprob.anomaly import run_anomaly

    config = _config(args, exclude=("knn_k",))
    classes = None if args.all_classes else [args.normal_class]
    summary = run_anomaly(
        config,
        classes,
        num_pairs=args.num_pairs,
        knn_k=args.knn_k,
        progress=False if args.no_progress else None,
        resume=args.resume,
        stop_after_s=args.stop_after,
    )
    # One line per class and score, then the means: main() prints every float of this dict.
    results: dict[str, Any] = {}
    for entry in summary["classes"]:
        for score, value in entry["auroc"].items():
            results[f"class_{entry['normal_class']}_auroc_{score}"] = value
    if len(summary["classes"]) > 1:
        results.update({f"mean_auroc_{score}": value for score, value in summary["mean_auroc"].items()})
    results["run_dir"] = summary["run_dir"]
    return results


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "diagnose": _diagnose,
    "anomaly": _anomaly,
    "export": _export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = COMMANDS[args.command](args)
    except Exception as exc:
        from vprob.engine.step import NonFiniteLossError
        from vprob.train import TrainingPaused

        if isinstance(exc, TrainingPaused):
            print(f"vprob {args.command}: {exc}", file=sys.stderr)
            return EXIT_PAUSED
        if not isinstance(exc, USER_ERRORS + (NonFiniteLossError,)):
            raise
        print(f"vprob {args.command}: error: {exc}", file=sys.stderr)
        return 2
    for key, value in results.items():
        if isinstance(value, float):
            print(f"{key}: {value:.4f}")
        elif key == "evaluation_skipped":
            print(value)
    print(f"run folder: {results['run_dir']}")
    return 0
