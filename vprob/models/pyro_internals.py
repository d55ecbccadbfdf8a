"""The two private Pyro functions vprob relies on, behind one adapter.

``vprob.models.elbo`` evaluates Pyro's ELBO estimators from Pyro's own traces without the host-device
synchronizations of ``ELBO.differentiable_loss``; for that it needs ``ELBO._get_traces`` (the particle
traces, vectorized or not) and ``pyro.infer.trace_elbo._compute_log_r`` (the downstream log ratios of
score-function terms). They are private: a Pyro release may rename or change them, so they are reached only
here, and ``tests/test_elbo.py`` fails with a clear message naming them if they change.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyro.infer import ELBO
from pyro.infer import trace_elbo as _trace_elbo
from pyro.poutine import Trace

PRIVATE_NAMES = ("pyro.infer.ELBO._get_traces", "pyro.infer.trace_elbo._compute_log_r")


def get_traces(elbo: ELBO, model, guide, args: tuple, kwargs: dict) -> Iterator[tuple[Trace, Trace]]:
    """(model trace, guide trace) of each particle of ``elbo``, as Pyro's ELBOs compute them."""
    return elbo._get_traces(model, guide, args, kwargs)


def compute_log_r(model_trace: Trace, guide_trace: Trace):
    """Pyro's ``MultiFrameTensor`` of log p - log q per plate context (score-function weights)."""
    return _trace_elbo._compute_log_r(model_trace, guide_trace)


def check_available() -> None:
    """RuntimeError naming the private Pyro function that is missing or changed, if any."""
    import inspect

    problems = []
    if not callable(getattr(ELBO, "_get_traces", None)):
        problems.append("pyro.infer.ELBO._get_traces is gone")
    elif list(inspect.signature(ELBO._get_traces).parameters) != ["self", "model", "guide", "args", "kwargs"]:
        signature = inspect.signature(ELBO._get_traces)
        problems.append(f"pyro.infer.ELBO._get_traces changed signature: {signature}")
    if not callable(getattr(_trace_elbo, "_compute_log_r", None)):
        problems.append("pyro.infer.trace_elbo._compute_log_r is gone")
    elif list(inspect.signature(_trace_elbo._compute_log_r).parameters) != ["model_trace", "guide_trace"]:
        problems.append("pyro.infer.trace_elbo._compute_log_r changed signature")
    if problems:
        raise RuntimeError(
            "vprob.models.pyro_internals needs updating for this Pyro release: " + "; ".join(problems)
        )
