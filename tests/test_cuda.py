"""The same ground truths on a CUDA device: the local rule against autograd, the fused sampler against the
operator chain and a known stationary law, the EP estimator against the exact value, the stacked U-Net
loss, and a whole run with ``--device cuda``. Skipped where torch sees no CUDA device (CI has none); run
them on a GPU machine with ``python -m pytest tests/test_cuda.py``."""

import h5py
import pytest
import torch

from asymnet import plasticity, walkback
from asymnet.metrics.balance import (
    entropy_production,
    linear_gaussian_entropy_production,
    linear_gaussian_stationary,
    linear_operator_matrices,
)
from asymnet.networks.unet import UNetNetwork
from asymnet.operators import BernoulliOperator, GaussianOperator
from asymnet.runlog import read_summary
from asymnet.sampler import ChainSampler
from tests.conftest import run_cli
from tests.test_balance import _linear_network, _matrix_with_spectral_radius
from tests.test_plasticity import _assert_rule_is_autograd, _autograd, _network, _relative_error
from tests.test_sampler import _network as _sampler_network

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


def _cuda_generator(seed: int) -> torch.Generator:
    return torch.Generator(CUDA).manual_seed(seed)


@pytest.mark.parametrize("operator", [GaussianOperator(0.5, "sqrt_T"), BernoulliOperator(0.5)],
                         ids=["gaussian", "bernoulli"])
def test_local_rule_equals_autograd_on_cuda_and_equals_the_cpu_rule(operator):
    """float64 on the GPU: the rule is autograd's gradient (1e-10), and the same trajectory gives the same
    update on the CPU (the trajectory is drawn on the GPU and copied, so both see the same states)."""
    binary = isinstance(operator, BernoulliOperator)
    net, _ = _network(phi="sigmoid" if binary else "tanh", learn_sigma=not binary)
    temperatures = [1.0, 1.0, 2.0, 4.0, 8.0]
    gpu_net = net.to(CUDA)
    gen = _cuda_generator(0)
    x = torch.rand(16, net.n_visible, generator=gen, dtype=torch.float64, device=CUDA)
    x = (x > 0.5).double() if binary else x
    s0 = walkback.settle_hidden(gpu_net, operator, x, 3, gen)
    states, drives = walkback.heating_trajectory_with_drives(gpu_net, operator, s0, temperatures, gen)
    assert states[-1].device.type == "cuda"

    loss, grads = _autograd(gpu_net, operator, states, temperatures)
    update = plasticity.trajectory_update(gpu_net, operator, states, temperatures, drives)
    names = ("W", "b", "w_T") + (() if binary else ("sigma_visible",))
    _assert_rule_is_autograd(update, loss, grads, names)

    cpu_net = net.to("cpu")  # nn.Module.to moves in place: the same parameters, now on the CPU
    cpu_update = plasticity.trajectory_update(cpu_net, operator, [s.cpu() for s in states], temperatures)
    for name in names:
        assert _relative_error(getattr(update, "grad_" + name).cpu(), getattr(cpu_update, "grad_" + name)) < 1e-10


@pytest.mark.parametrize("weight_power", [0.0, 0.5])
def test_weighted_local_rule_equals_weighted_autograd_on_cuda(weight_power):
    net, _ = _network()
    net = net.to(CUDA)
    operator = GaussianOperator(0.3, "T")
    temperatures = [1.0, 1.5, 2.25, 3.375]
    gen = _cuda_generator(1)
    x = torch.rand(16, net.n_visible, generator=gen, dtype=torch.float64, device=CUDA)
    s0 = walkback.settle_hidden(net, operator, x, 3, gen)
    states, drives = walkback.heating_trajectory_with_drives(net, operator, s0, temperatures, gen)
    net.zero_grad()
    loss = walkback.walkback_losses(net, operator, states, temperatures, weight_power).sum()
    loss.backward()
    update = plasticity.trajectory_update(net, operator, states, temperatures, drives, weight_power=weight_power)
    for name in ("W", "b", "w_T", "sigma_visible"):
        grad = dict(net.named_parameters())[name].grad
        assert _relative_error(getattr(update, "grad_" + name), grad) < 1e-10, name


def test_fused_cuda_chain_equals_the_operator_chain():
    """The fused sampler and the plain operator chain draw the same numbers from the same CUDA generator."""
    net = _sampler_network("tanh", "identity").to(CUDA)
    operator = GaussianOperator(0.4, "sqrt_T")
    s = torch.randn(32, net.n_units, dtype=torch.float64, generator=_cuda_generator(1), device=CUDA)
    reference = walkback.run_chain(net, operator, s, 200, _cuda_generator(5), 2.0, fused=False)
    fused = walkback.run_chain(net, operator, s, 200, _cuda_generator(5), 2.0)
    assert fused.device.type == "cuda"
    assert 0.1 < reference.abs().max() < 100
    assert torch.allclose(fused, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("hidden_units,T", [("slow", 1.0), ("fast", 2.0)])
def test_cuda_graph_replays_equal_eager_steps(hidden_units, T):
    """ChainSampler.run replays a captured CUDA graph of GRAPH_STEPS steps: the same chain, step count and
    random numbers as stepping eagerly from the same generator (200 = 2 warm-up + 6 x 32 + 6 eager)."""
    net = _sampler_network("tanh", "identity", hidden_units, seed=3).to(CUDA)
    operator = GaussianOperator(0.4, "sqrt_T")
    start = torch.randn(64, net.n_units, dtype=torch.float64, generator=_cuda_generator(1), device=CUDA)
    replayed = ChainSampler(net, operator, start, _cuda_generator(9))
    replayed.run(200, T)
    assert T in replayed._graphs  # the graph path ran
    stepped = ChainSampler(net, operator, start, _cuda_generator(9))
    for _ in range(200):
        stepped.step(T)
    assert 0.1 < stepped.state.abs().max() < 100
    assert torch.allclose(replayed.state, stepped.state, rtol=0, atol=1e-10)
    replayed.run(70, T)  # a second run replays the cached graph: no warm-up steps this time
    for _ in range(70):
        stepped.step(T)
    assert torch.allclose(replayed.state, stepped.state, rtol=0, atol=1e-10)


def test_cuda_chain_reaches_the_lyapunov_stationary_law():
    """A linear Gaussian network's chain, run on the GPU in float64 from 0, has the mean and covariance
    that the discrete Lyapunov equation gives (4,096 chains: the tolerances are 5 standard errors)."""
    A = _matrix_with_spectral_radius(4, 0.8, seed=7)
    network, operator = _linear_network(A, seed=7)
    A, c, L = linear_operator_matrices(network, operator)
    mean, cov = linear_gaussian_stationary(A, c, L)
    n = 4096
    s = walkback.run_chain(network.to(CUDA), operator, torch.zeros(n, 4, dtype=torch.float64, device=CUDA), 300,
                           _cuda_generator(2)).cpu()
    sd = cov.diagonal().sqrt()
    assert ((s.mean(0) - mean).abs() < 5 * sd / n**0.5).all()
    empirical = torch.cov(s.T)
    # the standard error of a covariance entry is sqrt(cov_ii cov_jj + cov_ij^2) / sqrt(n)
    stderr = (sd[:, None] ** 2 * sd[None, :] ** 2 + cov**2).sqrt() / n**0.5
    assert ((empirical - cov).abs() < 5 * stderr).all()


def test_streamed_ep_on_cuda_matches_the_exact_value():
    A = _matrix_with_spectral_radius(4, 0.85, seed=1)
    network, operator = _linear_network(A, seed=1)
    A, c, L = linear_operator_matrices(network, operator)
    exact = linear_gaussian_entropy_production(A, c, L)
    mean, cov = linear_gaussian_stationary(A, c, L)
    gen = _cuda_generator(3)
    noise = torch.randn(400, 4, dtype=torch.float64, generator=gen, device=CUDA)
    s0 = mean.to(CUDA) + noise @ torch.linalg.cholesky(cov).T.to(CUDA)
    estimate = entropy_production(network.to(CUDA), operator, s0, burn_in=10, generator=gen)
    assert exact > 0.01
    assert abs(estimate.ep - exact) < 3 * estimate.ep_stderr
    assert abs(estimate.ep - exact) < 0.02 * exact


def test_stacked_unet_loss_on_cuda_equals_the_step_by_step_loss():
    net = UNetNetwork((1, 8, 8), 8, (1, 2), 1, sigma_init=0.1, generator=torch.Generator().manual_seed(1))
    net = net.double().to(CUDA)
    operator = GaussianOperator(0.5, "sqrt_T")
    temperatures = [1.0, 2.0, 4.0]
    gen = _cuda_generator(4)
    s0 = torch.rand(6, 64, dtype=torch.float64, generator=gen, device=CUDA)
    states = walkback.heating_trajectory(net, operator, s0, temperatures, gen)
    stacked = walkback.walkback_losses(net, operator, states, temperatures, 0.5)
    net.temperature_rows = False
    stepwise = walkback.walkback_losses(net, operator, states, temperatures, 0.5)
    net.temperature_rows = True
    assert torch.allclose(stacked, stepwise, rtol=1e-10)


def test_tiny_study_trains_on_cuda_and_its_log_opens(tiny_study, tmp_path):
    out = tmp_path / "run"
    result = run_cli(tiny_study, "--out", out, "--device", "cuda", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = read_summary(out)
    assert summary.status == "finished"
    with h5py.File(out / "log.h5", "r") as log:
        loss = log["/metrics/loss"][:, 1]
        assert len(loss) > 0 and torch.isfinite(torch.as_tensor(loss)).all()
    sample = run_cli(out, "--steps", "100", "--chains", "50", "--device", "cuda", module="asymnet.sample")
    assert sample.returncode == 0, sample.stderr
    with h5py.File(out / "log.h5", "r") as log:
        assert "/samples/long_run/step_0000100" in log
