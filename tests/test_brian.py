"""The Brian2 export: the same chains as torch step by step and in law, the local rule as synaptic code, and the
round trip back to asymnet. Small networks (3 visible + 2 hidden units), float64, fixed seeds."""

import math

import brian2
import pytest
import torch
from brian2.devices.device import runtime_device

from asymnet import brian
from asymnet.metrics.balance import (entropy_production, linear_gaussian_entropy_production,
                                     linear_gaussian_stationary, linear_operator_matrices)
from asymnet.networks.mlp import MLPNetwork
from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import BernoulliOperator, GaussianOperator
from asymnet.plasticity import trajectory_update
from asymnet.walkback import heating_trajectory

# Brian2 2.9.0 calls pyparsing's camelCase names, deprecated in pyparsing 3.3, each time it parses code
pytestmark = pytest.mark.filterwarnings("ignore::pyparsing.warnings.PyparsingDeprecationWarning")

PATHWISE_ATOL = 1e-10  # float64 round-off accumulated over 1,000 steps (seen: ~1e-15)
RULE_ATOL = 1e-12  # a sum of K * batch float64 products, in another order than torch's GEMM (seen: ~2e-15)


def random_network(phi="tanh", phi_visible=None, temperature_input=True, seed=0, skew=1.0) -> RecurrentNetwork:
    """3 visible + 2 hidden units with asymmetric W, and random b, w_T and noise levels, in float64."""
    gen = torch.Generator().manual_seed(seed)
    network = RecurrentNetwork(3, 2, phi=phi, phi_visible=phi_visible, temperature_input=temperature_input,
                               sigma_init=0.4, generator=gen).double()
    with torch.no_grad():
        A = torch.randn(5, 5, generator=gen, dtype=torch.float64)
        network.W.copy_(0.5 * skew * (A - A.T) + 0.2 * A)
        network.b.normal_(0.0, 0.5, generator=gen)
        network.sigma_visible.add_(0.3 * torch.randn(3, generator=gen, dtype=torch.float64))
        network.sigma_hidden.add_(0.3 * torch.randn(2, generator=gen, dtype=torch.float64))
        if temperature_input:
            network.w_T.normal_(0.0, 0.5, generator=gen)
    return network


def torch_path(network, operator, s0, noise, T, known=None, values=None) -> torch.Tensor:
    """[s_0, ..., s_N] of torch's own operator step fed the given normals noise (N, n_chains, n_units)."""
    states = [s0]
    with torch.no_grad():
        for xi in noise:
            drive = network(states[-1], T)
            s = operator.mean(states[-1], drive) + operator.std(drive, T) * xi
            states.append(s if known is None else torch.where(known, values, s))
    return torch.stack(states)


@pytest.mark.parametrize("phi, phi_visible, noise_scaling", [
    ("tanh", "identity", "sqrt_T"),
    ("sigmoid", "relu", "T"),
    ("softplus", "tanh", "sqrt_T"),
])
def test_brian_and_torch_trajectories_agree_pathwise_over_1000_steps(phi, phi_visible, noise_scaling):
    network = random_network(phi, phi_visible)
    operator = GaussianOperator(alpha=0.5, noise_scaling=noise_scaling)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(1000, 4, 5, generator=gen, dtype=torch.float64)
    s0 = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    simulator = brian.export(network, operator, n_chains=4, T=2.0, noise=noise, states=s0)
    hot = simulator.run(400, record=True)
    simulator.T = 1.0
    cold = simulator.run(600, record=True)
    expected_hot = torch_path(network, operator, s0, noise[:400], 2.0)
    expected_cold = torch_path(network, operator, expected_hot[-1], noise[400:], 1.0)
    assert hot.shape == (401, 4, 5) and cold.shape == (601, 4, 5)
    assert expected_cold.abs().max() > 0.5  # the chains move: the comparison is not between two zeros
    torch.testing.assert_close(hot, expected_hot, rtol=0, atol=PATHWISE_ATOL)
    torch.testing.assert_close(cold, expected_cold, rtol=0, atol=PATHWISE_ATOL)
    assert simulator.steps_done == 1000


def test_clamped_units_hold_their_values_and_the_rest_follows_torch():
    network = random_network()
    operator = GaussianOperator(alpha=0.3)
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(1000, 3, 5, generator=gen, dtype=torch.float64)
    s0 = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    known = torch.tensor([True, False, True, False, False])
    values = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    simulator = brian.export(network, operator, n_chains=3, T=1.5, noise=noise, states=s0)
    simulator.clamp(known, values)
    path = simulator.run(1000, record=True)
    expected = torch_path(network, operator, torch.where(known, values, s0), noise, 1.5, known, values)
    torch.testing.assert_close(path, expected, rtol=0, atol=PATHWISE_ATOL)
    assert torch.equal(path[:, :, known], values[:, known].expand(1001, 3, 2))
    simulator.unclamp()
    simulator.set_states(s0)
    assert torch.equal(simulator.states, s0)


@pytest.mark.skipif(not brian.cython_available(), reason="Brian2's Cython target needs a C compiler and Cython")
def compiled_case(target: str):
    """4 chains of a random network at T = 2 exported to ``target`` with 1,000 steps of injected noise, and
    torch's path for the same noise."""
    network = random_network("tanh", "identity")
    operator = GaussianOperator(alpha=0.5)
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(1000, 4, 5, generator=gen, dtype=torch.float64)
    s0 = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    simulator = brian.export(network, operator, n_chains=4, T=2.0, noise=noise, states=s0, target=target)
    return simulator, torch_path(network, operator, s0, noise, 2.0), network


def test_cython_target_agrees_with_torch_pathwise():
    simulator, expected, _ = compiled_case("cython")
    for k in range(1, 5):  # no monitor: a monitor would be one more compilation
        simulator.run(250)
        torch.testing.assert_close(simulator.states, expected[250 * k], rtol=0, atol=PATHWISE_ATOL)


@pytest.mark.slow
def test_cpp_standalone_target_agrees_with_torch_pathwise_and_runs_once():
    simulator, expected, network = compiled_case("cpp_standalone")
    path = simulator.run(1000, record=True)
    assert brian2.get_device() is runtime_device  # the run restored Brian2's device
    torch.testing.assert_close(path, expected, rtol=0, atol=PATHWISE_ATOL)
    assert 0 < simulator.last_run_seconds < 10
    with pytest.raises(brian.BrianExportError, match="a cpp_standalone network runs once"):
        simulator.run(1)
    back, _ = simulator.to_network()
    assert torch.equal(back.W, network.W)


def chain_moments(path: torch.Tensor):
    """Means (n,) and covariances (n, n) of a path (steps, chains, n), each with its standard error over the
    independent chains."""
    n_chains = path.shape[1]
    means = path.mean(0)  # one sample per chain
    centred = path - path.mean((0, 1))
    covariances = torch.einsum("tci,tcj->cij", centred, centred) / path.shape[0]
    return ((means.mean(0), means.std(0) / math.sqrt(n_chains)),
            (covariances.mean(0), covariances.std(0) / math.sqrt(n_chains)))


def assert_within_3_stderr(a, a_stderr, b, b_stderr):
    bound = 3 * torch.sqrt(torch.as_tensor(a_stderr) ** 2 + torch.as_tensor(b_stderr) ** 2)
    assert torch.all((torch.as_tensor(a) - torch.as_tensor(b)).abs() <= bound), (a, b, bound)


def brian_stationary_path(network, operator, n_chains=200, burn_in=200, n_steps=2000, seed=5) -> torch.Tensor:
    simulator = brian.export(network, operator, n_chains=n_chains, seed=seed)
    simulator.run(burn_in)
    return simulator.run(n_steps, record=True)


def test_long_run_statistics_with_brian_noise_match_torch():
    network = random_network(temperature_input=False, seed=4, skew=1.5)
    operator = GaussianOperator(alpha=0.5)
    path = brian_stationary_path(network, operator)
    gen = torch.Generator().manual_seed(6)
    s = torch.zeros(200, 5, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(200):
            s = operator.sample(s, network(s), 1.0, gen)
        reference = [s]
        for _ in range(2000):
            reference.append(operator.sample(reference[-1], network(reference[-1]), 1.0, gen))
    (mean_b, mean_b_se), (cov_b, cov_b_se) = chain_moments(path[1:])
    (mean_t, mean_t_se), (cov_t, cov_t_se) = chain_moments(torch.stack(reference[1:]))
    assert_within_3_stderr(mean_b, mean_b_se, mean_t, mean_t_se)
    assert_within_3_stderr(cov_b, cov_b_se, cov_t, cov_t_se)
    ep_brian = brian.trajectory_entropy_production(network, operator, path)
    ep_torch = entropy_production(network, operator, torch.zeros(200, 5, dtype=torch.float64), n_steps=2000,
                                  burn_in=200, generator=gen)
    assert ep_brian.ep > 20 * ep_brian.ep_stderr  # clearly out of detailed balance
    assert_within_3_stderr(ep_brian.ep, ep_brian.ep_stderr, ep_torch.ep, ep_torch.ep_stderr)
    assert_within_3_stderr(ep_brian.conditional_entropy, ep_brian.conditional_entropy_stderr,
                           ep_torch.conditional_entropy, ep_torch.conditional_entropy_stderr)


def test_linear_brian_chain_has_the_exact_stationary_law_and_entropy_production():
    network = random_network("identity", temperature_input=False, seed=7, skew=0.6)
    operator = GaussianOperator(alpha=0.5)
    path = brian_stationary_path(network, operator, seed=8)
    (mean, mean_se), (cov, cov_se) = chain_moments(path[1:])
    exact_mean, exact_cov = linear_gaussian_stationary(*linear_operator_matrices(network, operator))
    assert_within_3_stderr(mean, mean_se, exact_mean, 0.0)
    assert_within_3_stderr(cov, cov_se, exact_cov, 0.0)
    estimate = brian.trajectory_entropy_production(network, operator, path)
    exact_ep = linear_gaussian_entropy_production(*linear_operator_matrices(network, operator))
    assert exact_ep > 0.1
    assert_within_3_stderr(estimate.ep, estimate.ep_stderr, exact_ep, 0.0)


def test_trajectory_entropy_production_reproduces_the_balance_estimator_on_its_own_chain():
    network = random_network(temperature_input=False, seed=9)
    operator = GaussianOperator(alpha=0.5)
    s0 = torch.randn(16, 5, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    expected = entropy_production(network, operator, s0, n_steps=300, burn_in=50, n_batches=10,
                                  generator=torch.Generator().manual_seed(11))
    gen = torch.Generator().manual_seed(11)  # the same draws, in the same order, as entropy_production's
    with torch.no_grad():
        s = s0
        for _ in range(50):
            s = operator.sample(s, network(s), 1.0, gen)
        path = [s]
        for _ in range(300):
            path.append(operator.sample(path[-1], network(path[-1]), 1.0, gen))
    estimate = brian.trajectory_entropy_production(network, operator, torch.stack(path), n_batches=10)
    for field in ("ep", "ep_stderr", "conditional_entropy", "conditional_entropy_stderr",
                  "relative_irreversibility", "relative_irreversibility_stderr"):
        assert getattr(estimate, field) == pytest.approx(getattr(expected, field), rel=1e-12, abs=1e-12), field
    assert torch.equal(estimate.final_states, expected.final_states)


def heating_batches(network, operator, n_batches, seed=12):
    """Heating trajectories [s_0, ..., s_4] of 8 examples each, recorded from torch, and their temperatures."""
    gen = torch.Generator().manual_seed(seed)
    temperatures = [1.0, 1.5, 2.25, 3.4]
    trajectories = [heating_trajectory(network, operator, torch.randn(8, 5, generator=gen, dtype=torch.float64),
                                       temperatures, gen) for _ in range(n_batches)]
    return trajectories, [temperatures] * n_batches


def test_local_rule_as_brian_synaptic_code_equals_plasticity():
    network = random_network("tanh", "identity", seed=13)
    operator = GaussianOperator(alpha=0.4)
    trajectories, temperatures = heating_batches(network, operator, 1)
    replayed = brian.local_rule_replay(network, operator, trajectories, temperatures)
    expected = trajectory_update(network, operator, trajectories[0], temperatures[0])
    assert expected.grad_W.abs().max() > 0.1
    torch.testing.assert_close(replayed.update_W, -expected.grad_W, rtol=0, atol=RULE_ATOL)
    torch.testing.assert_close(replayed.update_b, -expected.grad_b, rtol=0, atol=RULE_ATOL)
    torch.testing.assert_close(replayed.update_w_T, -expected.grad_w_T, rtol=0, atol=RULE_ATOL)
    torch.testing.assert_close(replayed.network.W, network.W, rtol=0, atol=0)  # learning_rate 0: nothing moves


def test_brian_training_run_ends_with_the_weights_of_torch():
    network = random_network("tanh", "identity", seed=14)
    operator = GaussianOperator(alpha=0.4, noise_scaling="T")
    trajectories, temperatures = heating_batches(network, operator, 5)
    learning_rate = 0.05
    trained = brian.local_rule_replay(network, operator, trajectories, temperatures, learning_rate=learning_rate)
    reference = random_network("tanh", "identity", seed=14)
    for states, temps in zip(trajectories, temperatures):
        update = trajectory_update(reference, operator, states, temps)
        with torch.no_grad():
            reference.W -= learning_rate * update.grad_W
            reference.b -= learning_rate * update.grad_b
            reference.w_T -= learning_rate * update.grad_w_T
    assert (reference.W - network.W).abs().max() > 1e-2  # training moved the weights
    for name in ("W", "b", "w_T"):
        torch.testing.assert_close(getattr(trained.network, name), getattr(reference, name), rtol=0, atol=RULE_ATOL)
    torch.testing.assert_close(trained.network.sigma, network.sigma, rtol=0, atol=0)


@pytest.mark.parametrize("phi, phi_visible, temperature_input, learn_sigma, noise_scaling", [
    ("tanh", "identity", True, True, "sqrt_T"),
    ("relu", "relu", False, False, "T"),
])
def test_export_then_import_is_exact(phi, phi_visible, temperature_input, learn_sigma, noise_scaling):
    network = random_network(phi, phi_visible, temperature_input)
    network.sigma_visible.requires_grad_(learn_sigma)
    operator = GaussianOperator(alpha=0.37, noise_scaling=noise_scaling)
    back, back_operator = brian.export(network, operator, n_chains=3).to_network()
    assert back_operator == operator
    assert (back.n_visible, back.n_hidden, back.phi_name, back.phi_visible_name, back.hidden_units) == (
        3, 2, phi, phi_visible, "slow")
    assert back.temperature_conditioned == temperature_input
    assert back.sigma_visible.requires_grad == learn_sigma
    assert network.state_dict().keys() == back.state_dict().keys()
    for name, value in network.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


def test_weights_edited_in_brian_are_read_back():
    network = random_network()
    operator = GaussianOperator(alpha=0.5)
    simulator = brian.export(network, operator, n_chains=2)
    edited = network.W.detach() * 2.0
    simulator.set_weights(edited)
    simulator.neurons.b[:] = 0.25
    back, _ = simulator.to_network()
    assert torch.equal(back.W, edited) and torch.equal(back.b, torch.full((5,), 0.25, dtype=torch.float64))
    simulator.synapses.w[0] = 7.0  # chain 0 only: the chains now disagree
    with pytest.raises(brian.BrianExportError, match="the chains hold different weights; pass chain="):
        simulator.to_network()
    only_second, _ = brian.import_network(simulator.neurons, simulator.synapses, chain=1)
    assert torch.equal(only_second.W, edited)


@pytest.mark.parametrize("network, operator, message", [
    (MLPNetwork(3, width=8), GaussianOperator(0.5), "Brian2 export needs a RecurrentNetwork"),
    (RecurrentNetwork(3, 2), BernoulliOperator(0.5), "Brian2 export supports the GaussianOperator only"),
    (RecurrentNetwork(3, 2, hidden_units="fast"), GaussianOperator(0.5),
     "Brian2 export supports slow hidden units only"),
])
def test_unsupported_networks_are_refused_with_the_limitation(network, operator, message):
    with pytest.raises(brian.BrianExportError, match=message):
        brian.export(network, operator)


def test_bad_arguments_are_refused_at_the_boundary():
    network, operator = random_network(), GaussianOperator(0.5)
    with pytest.raises(ValueError, match=r"noise must be \(n_steps, n_chains, n_units\) = \(n_steps, 2, 5\)"):
        brian.export(network, operator, n_chains=2, noise=torch.zeros(10, 5))
    with pytest.raises(ValueError, match="dt must be a positive time"):
        brian.export(network, operator, dt=0.001)
    with pytest.raises(brian.BrianExportError, match="target must be one of"):
        brian.export(network, operator, target="gpu")
    simulator = brian.export(network, operator, n_chains=2, noise=torch.zeros(3, 2, 5))
    with pytest.raises(brian.BrianExportError, match="the injected noise covers 3 steps"):
        simulator.run(4)


def test_importing_a_foreign_brian_network_names_the_missing_variables():
    neurons = brian2.NeuronGroup(4, "dv/dt = -v / (10*ms) : 1")
    synapses = brian2.Synapses(neurons, neurons, "c : 1")
    with pytest.raises(brian.BrianExportError, match="these neurons lack the variable\\(s\\) s, rate_visible, "
                                                     "rate_hidden, b, w_T, sigma, visible, unit, alpha"):
        brian.import_network(neurons, synapses)
    exported = brian.export(random_network(), GaussianOperator(0.5), target="numpy")
    with pytest.raises(brian.BrianExportError, match="these synapses lack the variable\\(s\\) w. Export the model"):
        brian.import_network(exported.neurons, synapses)
