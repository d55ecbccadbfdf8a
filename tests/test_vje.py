"""VJE as a Pyro model/guide pair: the objective it computes, where gradients flow, a user's own SVI loop,
the encoder cache, the scores, the engine, and bad options."""

import json
import math

import _digits
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from scipy import stats

from vprob.config import build_model, make_config
from vprob.data import SimCLRAugment
from vprob.methods import get_method
from vprob.models import VJE
from vprob.nets import DigitsConvNet
from vprob.train import train


def two_views(digits, batch=64, seed=0):
    return _digits.two_views(digits, batch, seed)[:2]


class CountingEncoder(DigitsConvNet):
    """DigitsConvNet that counts its forward calls (to check the guide -> model cache)."""

    calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


# ------------------------------------------------------------------------------------------------------
# Hand-written oracle of docs/maths.md (Polar Student-t, VJE) in float64, independent of the model's and
# PolarStudentT's code.


def polar_t_log_density(y, z, nu, df, radial_df, radial_scale, radial_weight, directional):
    """log p_dir(u) + w log p_rad(log r) - D log r of targets y (..., D) given z (..., D), nu (..., D)."""
    d = y.shape[-1]
    r = y.norm(dim=-1)
    u = y / r.unsqueeze(-1)
    m = z / z.norm(dim=-1, keepdim=True)
    if directional == "geodesic":
        k = d - 1
        c = (m * u).sum(-1)
        w = u - c.unsqueeze(-1) * m
        v = torch.arccos(c.clamp(-1, 1)).unsqueeze(-1) * w / w.norm(dim=-1, keepdim=True)
        quad = (v**2 / nu).sum(-1)
        log_det = 0.5 * nu.log().sum(-1) - 0.5 * (m**2 * nu).sum(-1).log()
    else:
        k = d
        quad = ((u - m) ** 2 / nu).sum(-1)
        log_det = 0.5 * nu.log().sum(-1)
    log_dir = (
        math.lgamma((df + k) / 2)
        - math.lgamma(df / 2)
        - k / 2 * math.log(df * math.pi)
        - log_det
        - (df + k) / 2 * torch.log1p(quad / df)
    )
    log_r, loc = r.log().detach().numpy(), z.norm(dim=-1).log().detach().numpy()
    log_rad = torch.from_numpy(stats.t.logpdf(log_r, radial_df, loc=loc, scale=radial_scale))
    return log_dir + radial_weight * log_rad - d * r.log()


def gaussian_kl(mu, nu):
    return 0.5 * (nu + mu**2 - 1 - nu.log()).sum(-1)


@pytest.mark.parametrize(
    "options",
    [
        dict(df=5.0),
        dict(
            df=3.0, radial_df=7.0, radial_weight=0.5, radial_scale=0.3, directional_scale="posterior_variance"
        ),
        dict(df=5.0, radial_weight=0.0, directional="euclidean"),
    ],
)
def test_objective_is_the_hand_written_symmetric_elbo(digits, options):
    """L = -1/2 (ELBO_12 + ELBO_21), averaged over images, at the guide's own sample z, analytic KL."""
    x1, x2 = (x.double() for x in two_views(digits, batch=12))
    torch.set_default_dtype(torch.float64)
    pyro.clear_param_store()
    vje = VJE(DigitsConvNet(feature_dim=8), **options).double()
    torch.manual_seed(3)
    loss, parts = vje.training_loss(torch.stack([x1, x2]))
    torch.manual_seed(3)
    z = poutine.trace(vje.guide).get_trace(x1, x2).nodes["z"]["value"]  # (2, B, D); slice a predicts view b

    h = vje.encoder(torch.cat([x1, x2])).view(2, 12, 8)
    mu, log_nu = vje.head(h.view(24, 8)).view(2, 12, 16).split(8, dim=-1)
    assert log_nu.abs().max() < 8  # inside the clamp: nu = exp(log nu) exactly
    nu = log_nu.exp()
    y = torch.stack([h[1], h[0]]).detach()
    # The tangent scale in radians^2: the delta-method variance nu / |mu|^2 of z/|z| (default), or nu.
    angular = options.get("directional_scale", "angular") == "angular"
    scale = nu / (mu**2).sum(-1, keepdim=True) if angular else nu
    log_lik = polar_t_log_density(
        y,
        z,
        scale,
        options["df"],
        options.get("radial_df") or options["df"],
        options.get("radial_scale", 1.0),
        options.get("radial_weight", 1.0),
        options.get("directional", "geodesic"),
    )
    kl = gaussian_kl(mu, nu)
    elbo_12, elbo_21 = (log_lik - kl).mean(-1)
    torch.testing.assert_close(loss, -0.5 * (elbo_12 + elbo_21), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(parts["kl"], kl.mean().detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(parts["nll"], -log_lik.mean().detach(), rtol=1e-10, atol=1e-10)

    # With Trace_ELBO the KL is the single-sample Monte Carlo term log q(z) - log p(z) at the same z.
    torch.manual_seed(3)
    mc_loss = Trace_ELBO().differentiable_loss(vje.model, vje.guide, x1, x2) / 24
    log_q = torch.distributions.Normal(mu, nu.sqrt()).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(mc_loss, (log_q - log_p - log_lik).mean(), rtol=1e-10, atol=1e-10)


def test_gradient_reaches_nu_from_both_the_kl_and_the_likelihood(digits):
    pyro.clear_param_store()
    vje = VJE(DigitsConvNet(feature_dim=16))
    x1, x2 = two_views(digits, batch=32)
    log_nu_weight = vje.head.net[-1].weight  # rows D..2D produce log nu

    def grad_of_log_nu_rows(model):
        vje.zero_grad()
        torch.manual_seed(0)
        TraceMeanField_ELBO().differentiable_loss(model, vje.guide, x1, x2).backward()
        return log_nu_weight.grad[16:].clone()

    full = grad_of_log_nu_rows(vje.model)
    kl_only = grad_of_log_nu_rows(poutine.block(vje.model, hide=["y"]))
    likelihood_only = full - kl_only
    assert kl_only.abs().max() > 1e-3
    assert likelihood_only.abs().max() > 1e-3
    assert not torch.allclose(full, kl_only)

    # The likelihood's scale is nu / |mu|^2 of the posterior (not detached); its targets carry no gradient.
    torch.manual_seed(0)
    guide_trace = poutine.trace(vje.guide).get_trace(x1, x2)
    model_trace = poutine.trace(poutine.replay(vje.model, trace=guide_trace)).get_trace(x1, x2)
    site = model_trace.nodes["y"]
    assert site["is_observed"] and not site["value"].requires_grad
    assert site["fn"].scale.requires_grad
    mu, nu = vje.posterior_from_features(vje.features(torch.cat([x1, x2])).view(2, 32, 16))
    torch.testing.assert_close(site["fn"].scale, nu / mu.square().sum(-1, keepdim=True))
    vje.directional_scale = "posterior_variance"
    model_trace = poutine.trace(poutine.replay(vje.model, trace=guide_trace)).get_trace(x1, x2)
    torch.testing.assert_close(model_trace.nodes["y"]["fn"].scale, nu)


def test_user_svi_loop_reduces_the_loss_on_digits(digits):
    pyro.clear_param_store()
    torch.manual_seed(0)
    encoder = CountingEncoder()
    vje = VJE(encoder)
    svi = SVI(vje.model, vje.guide, pyro.optim.Adam({"lr": 2e-3}), TraceMeanField_ELBO())
    losses = []
    for step in range(40):
        x1, x2 = two_views(digits, batch=128, seed=step)
        losses.append(svi.step(x1, x2) / 256)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 10
    assert encoder.calls == 40  # the model reuses the guide's encoder pass: one encoder call per step


def test_model_alone_recomputes_and_matches_the_cached_path(digits):
    pyro.clear_param_store()
    encoder = CountingEncoder(feature_dim=8)
    vje = VJE(encoder).eval()
    x1, x2 = two_views(digits, batch=10)
    guide_trace = poutine.trace(vje.guide).get_trace(x1, x2)
    cached = poutine.trace(poutine.replay(vje.model, trace=guide_trace)).get_trace(x1, x2)
    assert encoder.calls == 1
    fresh = poutine.trace(poutine.replay(vje.model, trace=guide_trace)).get_trace(x1, x2)
    assert encoder.calls == 2
    cached.compute_log_prob()
    fresh.compute_log_prob()
    torch.testing.assert_close(cached.nodes["y"]["log_prob"], fresh.nodes["y"]["log_prob"])
    # Targets are the swapped embeddings: slice 0 (posterior of view 1) observes view 2.
    h = vje.features(torch.cat([x1, x2])).view(2, 10, 8)
    torch.testing.assert_close(fresh.nodes["y"]["value"], torch.stack([h[1], h[0]]))

    # A guide call on other inputs is never reused for these.
    y1, y2 = two_views(digits, batch=10, seed=1)
    vje.guide(y1, y2)
    alone = poutine.trace(vje.model).get_trace(x1, x2)
    torch.testing.assert_close(alone.nodes["y"]["value"], torch.stack([h[1], h[0]]))
    assert alone.nodes["z"]["value"].shape == (2, 10, 8)

    samples = Predictive(vje.model, guide=vje.guide, num_samples=4, return_sites=["z"])(x1, x2)["z"]
    assert samples.shape == (4, 2, 10, 8)
    assert (samples[0] - samples[1]).abs().max() > 1e-4


def test_vectorized_particles_run_the_encoder_once(digits):
    pyro.clear_param_store()
    encoder = CountingEncoder(feature_dim=8)
    vje = VJE(encoder, num_particles=3)
    elbo = vje.elbo()
    assert elbo.num_particles == 3 and elbo.vectorize_particles
    x1, x2 = two_views(digits, batch=16)
    loss, parts = vje.training_loss(torch.stack([x1, x2]), elbo=elbo)
    assert encoder.calls == 1
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in vje.parameters() if p.grad is not None)


def test_gaussian_limit_ablation_runs(digits):
    """df = 1e6 (the Gaussian limit of both factors) trains without NaNs."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    vje = VJE(DigitsConvNet(), df=1e6)
    optimizer = torch.optim.Adam(vje.parameters(), lr=2e-3)
    for step in range(5):
        loss, parts = vje.training_loss(torch.stack(two_views(digits, batch=64, seed=step)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in parts.values())


def test_scores_embedding_and_collapse_monitors(digits):
    vje = VJE(DigitsConvNet(feature_dim=8)).eval()
    images = digits.images[:20]
    augment = SimCLRAugment.for_dataset("digits", digits)
    x = augment.normalize(images)
    h = vje.features(x)
    mu, nu = vje.posterior(x)
    scores = vje.uncertainty(x)
    torch.testing.assert_close(scores["log_det"], nu.log().sum(-1))
    torch.testing.assert_close(vje.embed(x), h / h.norm(dim=-1, keepdim=True))

    # One pair, same views: the anomaly score is pair_nll; the Cartesian density adds D * mean log r.
    polar = vje.anomaly_score(images, augment, num_pairs=1, generator=torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)
    x1, x2 = augment(images, generator), augment(images, generator)
    torch.testing.assert_close(polar, vje.pair_nll(x1, x2))
    cartesian = vje.anomaly_score(
        images, augment, num_pairs=1, generator=torch.Generator().manual_seed(7), coordinates="cartesian"
    )
    log_r = 0.5 * (vje.features(x1).norm(dim=-1).log() + vje.features(x2).norm(dim=-1).log())
    torch.testing.assert_close(cartesian - polar, 8 * log_r)
    # Several pairs: the mean of the per-pair scores, whatever the batch size.
    many = vje.anomaly_scores(
        images, augment, num_pairs=3, generator=torch.Generator().manual_seed(7), batch_size=20
    )
    generator = torch.Generator().manual_seed(7)
    per_pair = [vje.pair_nll(augment(images, generator), augment(images, generator)) for _ in range(3)]
    torch.testing.assert_close(many["nll"], torch.stack(per_pair).mean(0))

    # Collapse monitors: identical directions give 0 std; monitoring leaves BatchNorm statistics alone.
    vje.train()
    running_mean = vje.head.net[1].running_mean.clone()
    collapsed = vje.collapse_stats(torch.ones(16, 8) * torch.arange(1.0, 17.0).unsqueeze(1))
    assert collapsed["embedding_std"] < 1e-6
    torch.testing.assert_close(collapsed["mean_radius"], torch.arange(1.0, 17.0).mean() * math.sqrt(8))
    spread = vje.collapse_stats(torch.randn(4096, 8))
    assert abs(float(spread["embedding_std"]) - 1 / math.sqrt(8)) < 0.02
    assert float(spread["mean_nu"]) > 0
    torch.testing.assert_close(vje.head.net[1].running_mean, running_mean)
    assert vje.training


def test_engine_trains_vje_and_logs_collapse_monitors(tmp_path):
    results = train(
        make_config(
            method="vje",
            data="digits",
            epochs=1,
            batch_size=128,
            device="cpu",
            log_every=2,
            run_dir=str(tmp_path / "run"),
            df=7.0,
        ),
        progress=False,
    )
    assert 0.1 < results["knn_top1_k200_weighted"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records
    for record in records:
        for key in ("loss", "nll", "kl", "embedding_std", "mean_nu", "mean_radius"):
            assert math.isfinite(record[key]), key
        assert record["loss"] == pytest.approx(record["nll"] + record["kl"], rel=1e-5)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["options"]["df"] == 7.0


def test_config_options_reach_the_model():
    config = make_config(
        method="vje",
        data="digits",
        df=7.0,
        radial_df=3.0,
        radial_scale=0.5,
        radial_weight=0.25,
        directional="euclidean",
        num_particles=2,
    ).resolved()
    model = build_model(config)
    assert isinstance(model, VJE)
    assert (model.df, model.radial_df, model.radial_scale, model.radial_weight) == (7.0, 3.0, 0.5, 0.25)
    assert (model.directional, model.num_particles, model.dim) == ("euclidean", 2, 128)
    assert model.head.hidden_dim == config.options["head_hidden"]


def test_bad_options_raise_value_error(digits):
    for kwargs, name in [
        (dict(df=0.0), "df"),
        (dict(df=-1.0), "df"),
        (dict(df=math.inf), "df"),
        (dict(df=math.nan), "df"),
        (dict(radial_df=0.0), "radial_df"),
        (dict(radial_scale=0.0), "radial_scale"),
        (dict(radial_weight=-0.5), "radial_weight"),
        (dict(directional="chordal"), "directional"),
        (dict(num_particles=0), "num_particles"),
        (dict(hidden=0), "hidden"),
    ]:
        with pytest.raises(ValueError, match=name):
            VJE(DigitsConvNet(), **kwargs)
    with pytest.raises(ValueError, match="df"):
        make_config(method="vje", df=0.0).resolved()
    with pytest.raises(ValueError, match="directional"):
        make_config(method="vje", directional="chordal").resolved()
    with pytest.raises(ValueError, match="df"):
        get_method("vje").from_options(DigitsConvNet(), {"df": -2.0})
    # No feature_dim attribute and no image shape a dry pass can find: a clear message saying what to pass.
    with pytest.raises(ValueError, match="pass feature_dim="):
        VJE(torch.nn.Linear(4, 4))
    assert VJE(torch.nn.Linear(4, 4), feature_dim=4).dim == 4

    vje = VJE(DigitsConvNet())
    x1, x2 = two_views(digits, batch=4)
    with pytest.raises(ValueError, match=r"\(2, B, C, H, W\)"):
        vje.training_loss(torch.stack([x1, x2, x1]))
    with pytest.raises(ValueError, match="channels"):
        vje.guide(x1.expand(4, 3, 8, 8), x2.expand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        vje.guide(x1, x2[:3])
    with pytest.raises(ValueError, match="image batch"):
        vje.embed(x1[0])
    augment = SimCLRAugment.for_dataset("digits", digits)
    with pytest.raises(ValueError, match="uint8"):
        vje.anomaly_score(x1, augment)
    with pytest.raises(ValueError, match="num_pairs"):
        vje.anomaly_score(digits.images[:4], augment, num_pairs=0)
    with pytest.raises(ValueError, match="coordinates"):
        vje.anomaly_score(digits.images[:4], augment, coordinates="spherical")


def _pair_oracle(vje, h_a, h_b, z_a, z_b, mu_a, nu_a, mu_b, nu_b):
    """-1/2 [log p(h_b | z_a; q_a) + log p(h_a | z_b; q_b)] on R^D, from the hand-written density."""
    options = (vje.df, vje.radial_df or vje.df, vje.radial_scale, vje.radial_weight, vje.directional)
    scale_a = nu_a / (mu_a**2).sum(-1, keepdim=True)
    scale_b = nu_b / (mu_b**2).sum(-1, keepdim=True)
    return -0.5 * (
        polar_t_log_density(h_b, z_a, scale_a, *options) + polar_t_log_density(h_a, z_b, scale_b, *options)
    )


def test_scores_put_each_view_s_embedding_under_the_other_view_s_posterior(digits):
    """As in training, direction a scores the other view's embedding h_b under q(z | h_a): a swap (each view's
    own embedding under its own posterior) gives other numbers."""
    torch.manual_seed(0)
    vje = VJE(DigitsConvNet(feature_dim=8)).double().eval()
    # Different images as the two inputs: the two readings then differ clearly (both are functions of pairs).
    x1, x2 = two_views(digits, batch=10)[0].double(), two_views(digits, batch=10, seed=1)[0].double()
    h1, h2 = vje.features(x1).detach(), vje.features(x2).detach()  # eval mode: no batch dependence
    (mu1, nu1), (mu2, nu2) = vje.posterior_from_features(h1), vje.posterior_from_features(h2)
    got = vje.pair_nll(x1, x2, coordinates="cartesian")
    expected = _pair_oracle(vje, h1, h2, mu1, mu2, mu1, nu1, mu2, nu2).detach()
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    swapped = -0.5 * (
        polar_t_log_density(
            h1, mu1, nu1 / (mu1**2).sum(-1, keepdim=True), vje.df, vje.df, vje.radial_scale, 1.0, "geodesic"
        )
        + polar_t_log_density(
            h2, mu2, nu2 / (mu2**2).sum(-1, keepdim=True), vje.df, vje.df, vje.radial_scale, 1.0, "geodesic"
        )
    )
    assert (got - swapped.detach()).abs().max() > 1e-3  # a million times the tolerance above


def test_monte_carlo_scores_average_the_likelihood_over_posterior_draws(digits):
    torch.manual_seed(0)
    vje = VJE(DigitsConvNet(feature_dim=8), score_samples=16).double().eval()
    images = digits.images[:6]
    normalize = SimCLRAugment.for_dataset("digits", digits).normalize

    def same_views(x, generator):  # no augmentation: the generator draws only the posterior samples
        return normalize(x).double()

    scores = vje.anomaly_scores(images, same_views, num_pairs=1, generator=torch.Generator().manual_seed(5))
    h = vje.features(normalize(images).double()).detach()
    mu, nu = vje.posterior_from_features(h)
    mu, nu = torch.stack([mu, mu]), torch.stack([nu, nu])
    eps = torch.randn((16, 2, 6, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = mu + nu.sqrt() * eps
    expected = _pair_oracle(vje, h, h, z[:, 0], z[:, 1], mu[0], nu[0], mu[1], nu[1]).mean(0).detach()
    torch.testing.assert_close(scores["nll_cartesian"], expected, rtol=1e-9, atol=1e-9)
    plug_in = vje.anomaly_scores(images, same_views, num_pairs=1, samples=0)["nll_cartesian"]
    assert (plug_in - expected).abs().max() > 1e-3  # the draws matter
