"""ProjectedNormal under torch.jit.trace, Pyro's JIT (JitTrace_ELBO, NUTS jit_compile) and torch.compile.

Each check runs in a fresh interpreter (a subprocess), as a user's script would: the caches that eager calls
fill (quadrature nodes per dtype and device) must not be what makes tracing work. The oracle is the eager
computation on the same inputs and, for random draws, the same seed.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import json, warnings
import torch, pyro
import pyro.distributions as dist
from distributions import ProjectedNormal
warnings.simplefilter("ignore")  # TracerWarnings about the static event size
torch.set_num_threads(1)
out = {}
def cases():
    # log_prob takes one of two routes by batch size (for d <= 16: the (..., d) layout in float64 for small
    # batches, a loop over the coordinates for large ones): both are traced and compiled.
    from distributions import projected_normal
    gen = torch.Generator().manual_seed(0)
    for path, limit, dims in (("small batch", 1 << 62, (3, 20)), ("large batch", -1, (3,))):
        projected_normal._ROWS_MAX_NUMEL = limit
        for d in dims:  # the closed form (k < 16) and the quadrature (k >= 16)
            for scale_shape in ((1,), (d,)):
                loc = 3 * torch.randn(6, d, generator=gen, dtype=torch.float64)
                scale = 0.5 + torch.rand(scale_shape, generator=gen, dtype=torch.float64)
                yield f"{path},d={d},scale={scale_shape}", loc, scale
def near_and_antipodal(loc, scale):
    # the trace is made at values near the mode; it must also be right where the tail branch is taken
    u = ProjectedNormal(loc, scale).sample()
    return u, -u
"""


def run_script(body: str, timeout: int = 300) -> dict:
    code = PRELUDE + textwrap.dedent(body) + "\nprint('RESULT ' + json.dumps(out))\n"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_jit_trace_of_log_prob_and_rsample_equals_eager():
    out = run_script("""
        for name, loc, scale in cases():
            u, far = near_and_antipodal(loc, scale)
            f = lambda lo, sc, x: ProjectedNormal(lo, sc, validate_args=False).log_prob(x)
            traced = torch.jit.trace(f, (loc, scale, u))
            out[name + " log_prob"] = max((traced(loc, scale, x) - f(loc, scale, x)).abs().max().item()
                                         for x in (u, far))
            lg = loc.clone().requires_grad_()
            (g_traced,) = torch.autograd.grad(traced(lg, scale, far).sum(), lg)
            (g_eager,) = torch.autograd.grad(f(lg, scale, far).sum(), lg)
            out[name + " grad"] = (g_traced - g_eager).abs().max().item()
            g = lambda lo, sc: ProjectedNormal(lo, sc, validate_args=False).rsample((3,))
            traced_g = torch.jit.trace(g, (loc, scale), check_trace=False)  # random: no re-run check
            torch.manual_seed(5)
            a = traced_g(loc, scale)
            torch.manual_seed(5)
            out[name + " rsample"] = (a - g(loc, scale)).abs().max().item()
    """)
    assert len(out) == 18
    for key, err in out.items():
        assert err <= 1e-12, (key, err)


def test_pyro_jit_trace_elbo_and_nuts_jit_compile():
    out = run_script("""
        from pyro.infer import MCMC, NUTS, SVI, JitTrace_ELBO, Trace_ELBO
        torch.manual_seed(0)
        data = ProjectedNormal(torch.tensor([2.0, -1.0, 0.5])).sample((100,))

        def model():
            loc = pyro.param("loc", torch.tensor([0.3, 0.3, 0.3]))
            scale = pyro.param("scale", torch.tensor([1.0, 1.0, 1.0]), constraint=dist.constraints.positive)
            with pyro.plate("data", len(data)):
                pyro.sample("obs", ProjectedNormal(loc, scale), obs=data)

        params = {}
        for elbo in (Trace_ELBO(), JitTrace_ELBO()):
            pyro.clear_param_store()
            svi = SVI(model, lambda: None, pyro.optim.Adam({"lr": 0.05}), elbo)
            losses = [svi.step() for _ in range(20)]
            params[type(elbo).__name__] = pyro.param("loc").detach()
        out["svi"] = (params["Trace_ELBO"] - params["JitTrace_ELBO"]).abs().max().item()

        def bayes_model():
            loc = pyro.sample("loc", dist.Normal(torch.zeros(3), 3.0).to_event(1))
            with pyro.plate("data", len(data)):
                pyro.sample("obs", ProjectedNormal(loc), obs=data)

        samples = {}
        for jit in (False, True):
            pyro.set_rng_seed(1)
            mcmc = MCMC(NUTS(bayes_model, jit_compile=jit, ignore_jit_warnings=True), num_samples=15,
                        warmup_steps=15, disable_progbar=True)
            mcmc.run()
            samples[jit] = mcmc.get_samples()["loc"]
        out["nuts"] = (samples[False] - samples[True]).abs().max().item()
        out["nuts_finite"] = bool(torch.isfinite(samples[True]).all())
    """)
    assert out["svi"] <= 1e-5
    assert out["nuts_finite"] and out["nuts"] <= 1e-4


@pytest.mark.slow
def test_torch_compile_fullgraph_equals_eager():
    out = run_script(
        """
        import torch._inductor.config
        torch._inductor.config.fallback_random = True  # the same random stream as eager
        for name, loc, scale in cases():
            u, far = near_and_antipodal(loc, scale)
            f = lambda lo, sc, x: ProjectedNormal(lo, sc, validate_args=False).log_prob(x)
            compiled = torch.compile(f, fullgraph=True)
            out[name + " log_prob"] = max((compiled(loc, scale, x) - f(loc, scale, x)).abs().max().item()
                                         for x in (u, far))
            g = lambda lo, sc: ProjectedNormal(lo, sc, validate_args=False).rsample((3,))
            compiled_g = torch.compile(g, fullgraph=True)
            torch.manual_seed(5)
            a = compiled_g(loc, scale)
            torch.manual_seed(5)
            out[name + " rsample"] = (a - g(loc, scale)).abs().max().item()
    """,
        timeout=900,
    )
    assert len(out) == 12
    for key, err in out.items():
        assert err <= 1e-11, (key, err)
