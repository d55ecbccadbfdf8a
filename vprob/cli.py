"""The ``vprob`` command: ``vprob train``, ``vprob evaluate RUN_DIR``, ``vprob diagnose RUN_DIR``,
``vprob anomaly``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vprob.anomaly import ANOMALY_METHODS
from vprob.checkpoint import CHECKPOINT_NAME, CheckpointError
from vprob.losses import PROJECTIONS
from vprob.models import DIRECTIONAL_MODES, KL_MODES, METHODS
from vprob.optim import OPTIMIZERS
from vprob.train import DATASETS, NonFiniteLossError, TrainConfig, TrainingPaused

# Errors a user can cause and fix: reported as one line and a non-zero exit, no traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError, OSError,
               CheckpointError, NonFiniteLossError)
# A time budget (--stop-after) ran out at a checkpoint: not an error; the same command with --resume goes on.
EXIT_PAUSED = 75  # EX_TEMPFAIL of sysexits.h: "try again later"


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


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_vje_options(parser: argparse.ArgumentParser) -> None:
    """VJE's options (vprob.models.VJE), shared by ``train`` and ``anomaly``."""
    parser.add_argument("--vje-df", type=_positive_float, default=5.0,
                        help="VJE: degrees of freedom of the directional t (1e6: the Gaussian limit)")
    parser.add_argument("--vje-radial-df", type=_positive_float,
                        help="VJE: degrees of freedom of the radial t (default: --vje-df)")
    parser.add_argument("--vje-radial-scale", type=_positive_float, default=1.0,
                        help="VJE: scale of the radial t on log r")
    parser.add_argument("--vje-radial-weight", type=_non_negative_float, default=1.0,
                        help="VJE: weight of the radial log-factor (1: the exact density)")
    parser.add_argument("--vje-directional", choices=DIRECTIONAL_MODES, default="geodesic",
                        help="VJE: directional factor (euclidean: the earlier version's ablation)")
    parser.add_argument("--vje-num-particles", type=_positive_int, default=1,
                        help="VJE: posterior samples per image and step")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Where and how a training run executes, shared by ``train`` and ``anomaly``."""
    parser.add_argument("--data-dir", help="CIFAR-10 folder with train.npz and test.npz (JPEG archives)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _vje_config(args: argparse.Namespace) -> dict[str, Any]:
    return dict(vje_df=args.vje_df, vje_radial_df=args.vje_radial_df, vje_radial_scale=args.vje_radial_scale,
                vje_radial_weight=args.vje_radial_weight, vje_directional=args.vje_directional,
                vje_num_particles=args.vje_num_particles)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vprob", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a model (default: VSimCLR on the bundled digits, CPU, about a minute)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("--method", choices=METHODS, default="vsimclr")
    train.add_argument("--data", choices=DATASETS, default="digits")
    train.add_argument("--run-dir", help="output folder (default: runs/METHOD-DATA-TIMESTAMP)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    train.add_argument("--epochs", type=_positive_int)
    train.add_argument("--batch-size", type=_positive_int)
    train.add_argument("--dim", type=_positive_int, help="embedding dimension")
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--lr", type=_positive_float)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--warmup-epochs", type=int)
    train.add_argument("--tau", type=_positive_float, help="temperature")
    train.add_argument("--kl", choices=KL_MODES, default="bound", help="VCL's KL term")
    train.add_argument("--beta", type=float, default=1.0, help="weight of VCL's normalized KL")
    train.add_argument("--num-views", type=_positive_int, default=2)
    train.add_argument("--projection", choices=PROJECTIONS, default="centroid",
                       help="ProjNCE's projection function")
    train.add_argument("--t-pos", type=float, default=1.0, help="CCT attraction temperature")
    train.add_argument("--t-neg", type=float, default=0.9, help="CCT repulsion temperature")
    _add_run_options(train)
    _add_vje_options(train)
    train.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    train.add_argument("--checkpoint-every", type=_positive_int, default=1, help="epochs between checkpoints")
    train.add_argument("--max-steps", type=_positive_int, help="stop after this many steps (smoke tests)")
    train.add_argument("--stop-after", type=_positive_float, metavar="SECONDS",
                       help="training time budget of this call (jobs with a wall-clock limit): stop at the "
                            f"last checkpoint that fits, exit {EXIT_PAUSED}; --resume continues")
    train.add_argument("--skip-nonfinite", action="store_true",
                       help="skip steps with a non-finite loss or gradient instead of stopping")
    train.add_argument("--sync-bn", action="store_true",
                       help="with torchrun on CUDA: synchronize BatchNorm statistics across processes")

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
    diagnose.add_argument("--max-images", type=_positive_int, default=5000,
                          help="cap on the images used for spectra and the MI bound")
    diagnose.add_argument("--no-posterior", action="store_true",
                          help="skip posterior sampling (arviz, geomstats): spectra, MI, uncertainty, OOD")

    anomaly = commands.add_parser(
        "anomaly", help="one-class anomaly detection: train on one class, AUROC on the whole test set",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    anomaly.add_argument("--method", choices=ANOMALY_METHODS, default="vje")
    anomaly.add_argument("--data", choices=DATASETS, default="digits")
    which = anomaly.add_mutually_exclusive_group(required=True)
    which.add_argument("--normal-class", type=int, help="index of the normal class (0..9)")
    which.add_argument("--all-classes", action="store_true",
                       help="one run per class, and the mean AUROC over the classes")
    anomaly.add_argument("--run-dir", help="output folder (default: runs/anomaly-METHOD-DATA-TIMESTAMP)")
    anomaly.add_argument("--resume", action="store_true",
                         help="continue the runs in --run-dir: finished classes are read back, others resume")
    anomaly.add_argument("--stop-after", type=_positive_float, metavar="SECONDS",
                         help=f"training time budget of this call, shared by the classes; exit {EXIT_PAUSED} "
                              "when it runs out, --resume continues")
    anomaly.add_argument("--epochs", type=_positive_int, help="default: 100 (digits), 200 (cifar10)")
    anomaly.add_argument("--batch-size", type=_positive_int, help="default: 32 (digits), 256 (cifar10)")
    anomaly.add_argument("--lr", type=_positive_float)
    anomaly.add_argument("--num-pairs", type=_positive_int, default=8,
                         help="augmented view pairs averaged by the likelihood score")
    anomaly.add_argument("--knn-k", type=_positive_int, default=1,
                         help="the kNN baseline's neighbour rank (distance to the k-th nearest)")
    _add_run_options(anomaly)
    _add_vje_options(anomaly)
    return parser


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from vprob.train import train

    config = TrainConfig(
        method=args.method, data=args.data, data_dir=args.data_dir, epochs=args.epochs,
        batch_size=args.batch_size, dim=args.dim, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, tau=args.tau, kl=args.kl,
        beta=args.beta, num_views=args.num_views, projection=args.projection, t_pos=args.t_pos,
        t_neg=args.t_neg, device=args.device, seed=args.seed, compile=args.compile,
        amp=False if args.no_amp else None, checkpoint_every=args.checkpoint_every, max_steps=args.max_steps,
        skip_nonfinite=args.skip_nonfinite, sync_bn=args.sync_bn, run_dir=args.run_dir, **_vje_config(args),
    )
    if args.resume and not args.run_dir:
        raise ValueError("--resume needs --run-dir (the folder of the run to continue)")
    if args.resume:
        # The run's own settings win; the command line only has to name the folder.
        from vprob.checkpoint import load_checkpoint
        from vprob.train import config_from_dict

        checkpoint = Path(args.run_dir) / CHECKPOINT_NAME
        if not checkpoint.exists():
            # A run stopped before the end of its first epoch has no checkpoint yet: say so plainly.
            raise CheckpointError(
                f"--resume: nothing to resume in {args.run_dir}: no checkpoint yet (a run writes its first "
                "at the end of its first epoch); start the run again without --resume"
            )
        saved = load_checkpoint(checkpoint)["config"]
        saved.update(run_dir=args.run_dir, device=args.device, max_steps=args.max_steps)
        if args.data_dir:
            saved["data_dir"] = args.data_dir
        config = config_from_dict(saved)
    return train(config, resume=args.resume, progress=False if args.no_progress else None,
                 stop_after_s=args.stop_after)


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from vprob.train import evaluate_run

    return evaluate_run(args.run_dir, data_dir=args.data_dir, device=args.device)


def _diagnose(args: argparse.Namespace) -> dict[str, Any]:
    from vprob.diagnose import diagnose_run

    report = diagnose_run(args.run_dir, out_dir=args.out_dir, device=args.device, data_dir=args.data_dir,
                          max_images=args.max_images, posterior=not args.no_posterior)
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


def _anomaly(args: argparse.Namespace) -> dict[str, Any]:
    from vprob.anomaly import run_anomaly

    config = TrainConfig(
        method=args.method, data=args.data, data_dir=args.data_dir, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed,
        amp=False if args.no_amp else None, run_dir=args.run_dir, **_vje_config(args),
    )
    classes = None if args.all_classes else [args.normal_class]
    summary = run_anomaly(config, classes, num_pairs=args.num_pairs, knn_k=args.knn_k,
                          progress=False if args.no_progress else None, resume=args.resume,
                          stop_after_s=args.stop_after)
    # One line per class and score, then the means: main() prints every float of this dict.
    results: dict[str, Any] = {}
    for entry in summary["classes"]:
        for score, value in entry["auroc"].items():
            results[f"class_{entry['normal_class']}_auroc_{score}"] = value
    if len(summary["classes"]) > 1:
        results.update({f"mean_auroc_{score}": value for score, value in summary["mean_auroc"].items()})
    results["run_dir"] = summary["run_dir"]
    return results


COMMANDS = {"train": _train, "evaluate": _evaluate, "diagnose": _diagnose, "anomaly": _anomaly}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = COMMANDS[args.command](args)
    except TrainingPaused as exc:
        print(f"vprob {args.command}: {exc}", file=sys.stderr)
        return EXIT_PAUSED
    except USER_ERRORS as exc:
        print(f"vprob {args.command}: error: {exc}", file=sys.stderr)
        return 2
    for key, value in results.items():
        if isinstance(value, float):
            print(f"{key}: {value:.4f}")
    print(f"run folder: {results['run_dir']}")
    return 0
