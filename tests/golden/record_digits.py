"""Record fixed-seed digits runs of every method (loss per step, kNN, linear) as the behaviour oracle.

The numbers in ``digits_runs.json`` were recorded with the engine as it was before the method and data-set
registries (commit 3f2b351, through its flat ``TrainConfig``); ``tests/test_behaviour_unchanged.py`` checks
that the same seeds still give the same numbers. ``python tests/golden/record_digits.py`` rewrites
``digits_runs.json``.
"""

import json
import sys
import tempfile
from pathlib import Path

import torch

# Each case: method, its options, a short run (4 steps of batch 64, digits, CPU, every step logged).
CASES = {
    "simclr": ("simclr", {}),
    "supcon": ("supcon", {}),
    "projnce": ("projnce", {"projection": "median"}),
    "cct": ("cct", {"num_views": 3}),
    "vsimclr": ("vsimclr", {"kl": "bound"}),
    "vsimclr-exact": ("vsimclr", {"kl": "exact"}),
    "vsupcon": ("vsupcon", {}),
    # Recorded before VJE had directional_scale (its only reading then: the posterior variance itself).
    "vje": ("vje", {"directional_scale": "posterior_variance"}),
}
ENGINE = dict(data="digits", epochs=1, max_steps=4, batch_size=64, device="cpu", log_every=1, seed=3)
MODEL = dict(dim=8, head_hidden=32)


def run_case(method: str, options: dict, run_dir: str) -> dict:
    from vprob.config import make_config
    from vprob.train import train

    # VJE has no projector: dim is not among its options (it was ignored before the registries).
    model = {k: v for k, v in MODEL.items() if not (method == "vje" and k == "dim")}
    config = make_config(method=method, run_dir=run_dir, **ENGINE, **model, **options)
    results = train(config, progress=False)
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in lines if line.strip()]
    keep = ("knn_top1_k200_weighted", "knn_top1_k10_majority", "linear_top1")
    return {"loss": losses, **{k: results[k] for k in keep}}


def main() -> None:
    torch.set_num_threads(1)
    out = {}
    for name, (method, options) in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            out[name] = run_case(method, options, str(Path(tmp) / "run"))
        print(name, out[name], file=sys.stderr)
    path = Path(__file__).with_name("digits_runs.json")
    path.write_text(json.dumps({"engine": ENGINE, "model": MODEL, "runs": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
