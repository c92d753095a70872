"""training.optimizer: least_squares. Its regression is the walk back's loss (its gradient is the local rule's,
float64 to 1e-10), its full step lands on the weighted least-squares solution (where the rule's gradient
vanishes), its means are Adam-style bias-corrected moving averages, its state survives a checkpoint, and studies it does
not cover are refused by name."""

import numpy as np
import pytest
import torch

from asymnet import plasticity, readout, walkback
from asymnet.anchor import add_anchor, score_anchor_pairs
from asymnet.errors import TrainingDiverged
from asymnet.networks import RecurrentNetwork
from asymnet.operators import BernoulliOperator, GaussianOperator
from asymnet.study import StudyError, parse_study


def _network(hidden_units="fast", temperature_input=True, learn_sigma=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = RecurrentNetwork(2, 12, sigma_init=0.2, learn_sigma=learn_sigma, generator=gen, phi_visible="identity",
                           temperature_input=temperature_input, hidden_units=hidden_units, hidden_gain=2.0,
                           hidden_bias=1.0).double()
    with torch.no_grad():
        m = net.n_units
        net.W[:m].normal_(0.0, 0.3, generator=gen)
        net.b[:m].normal_(0.0, 0.3, generator=gen)
        if temperature_input:
            net.w_T[:m].normal_(0.0, 0.3, generator=gen)
        net.sigma_visible.add_(torch.randn(2, generator=gen, dtype=torch.float64) * 0.2)
    return net, gen


def _trajectory(net, operator, gen, temperatures, batch=64):
    x = torch.randn(batch, 2, generator=gen, dtype=torch.float64)
    s0 = walkback.settle_hidden(net, operator, x, 2, gen)
    return walkback.heating_trajectory(net, operator, s0, temperatures, gen)


def _rule_as_matrix(update, net):
    """The local rule's gradient laid out as readout.readout_matrix's theta: (p, m)."""
    m = net.n_units
    rows = [update.grad_W[:m].t(), update.grad_b[:m, None].t()]
    if update.grad_w_T is not None:
        rows.append(update.grad_w_T[:m, None].t())
    return torch.cat(rows)


def _least_squares_gradient(net, operator, regressions):
    A, C = (sum(parts) for parts in zip(*(readout.moments(*r) for r in regressions)))
    return (A @ readout.readout_matrix(net) - C) * readout.unit_weights(net, operator)


TEMPERATURES = [1.0, 1.0, 1.5, 2.25, 3.4, 5.1]


def test_the_weighted_gram_matrix_is_the_general_product_exactly_symmetric():
    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(700, 37, generator=gen, dtype=torch.float64) * torch.linspace(0.01, 3.0, 37,
                                                                                      dtype=torch.float64)
    weights = torch.rand(700, generator=gen, dtype=torch.float64)
    weights[::7] = 0.0  # rows the anchor's zero weight would carry
    expected = (rows * weights[:, None]).t() @ rows
    for given in (rows, rows.float()):  # float32 features are promoted before the product
        A = readout.weighted_gram(given, weights)
        assert A.dtype == torch.float64 and A.shape == (37, 37)
        assert torch.equal(A, A.t())
        tol = 1e-12 if given.dtype == torch.float64 else 1e-6
        assert torch.allclose(A, 0.5 * (expected + expected.t()), rtol=tol, atol=tol * expected.abs().max())
    ones = torch.ones(700, dtype=torch.float64)  # no weights: each row counts once, as with weights of 1
    assert torch.equal(readout.weighted_gram(rows), readout.weighted_gram(rows, ones))
    # a negative weight (no square root) takes the general product and stays exact
    weights[0] = -0.5
    expected = (rows * weights[:, None]).t() @ rows
    assert torch.allclose(readout.weighted_gram(rows, weights), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hidden_units, temperature_input", [("fast", True), ("fast", False), ("slow", True)])
@pytest.mark.parametrize("noise_scaling, power", [("sqrt_T", 0.0), ("T", 0.0), ("sqrt_T", 1.0)])
def test_the_regression_gradient_is_the_local_rule(hidden_units, temperature_input, noise_scaling, power):
    net, gen = _network(hidden_units, temperature_input)
    operator = GaussianOperator(0.4, noise_scaling)
    states = _trajectory(net, operator, gen, TEMPERATURES)
    rule = plasticity.trajectory_update(net, operator, states, TEMPERATURES, None, False, power)
    regression = readout.regression(net, operator, states, TEMPERATURES, power)
    gradient = _least_squares_gradient(net, operator, [regression])
    expected = _rule_as_matrix(rule, net)
    assert ((gradient - expected).norm() / expected.norm()).item() < 1e-10


def test_the_anchor_enters_as_a_weighted_one_step_regression():
    net, gen = _network()
    operator = GaussianOperator(0.5)
    states = _trajectory(net, operator, gen, TEMPERATURES)
    std = operator.std(net(states[0]), 1.0)
    start, target = score_anchor_pairs(states[0], std, 0.8, gen)
    rule = add_anchor(
        plasticity.trajectory_update(net, operator, states, TEMPERATURES, None, False),
        plasticity.trajectory_update(net, operator, [target, start], [1.0], None, False), 3.0)
    regressions = [readout.regression(net, operator, states, TEMPERATURES),
                   readout.regression(net, operator, [target, start], [1.0], weight=3.0)]
    gradient = _least_squares_gradient(net, operator, regressions)
    expected = _rule_as_matrix(rule, net)
    assert ((gradient - expected).norm() / expected.norm()).item() < 1e-10


def _weighted_lstsq(regression):
    """The minimiser of sum_t w_t |y - f theta|^2 by an SVD solver (numpy's lstsq), independent of the
    optimiser's Cholesky solve."""
    features, targets, weights = regression
    root = weights.sqrt().view(-1, 1, 1)
    F = (features * root).reshape(-1, features.shape[-1]).numpy()
    Y = (targets * root).reshape(-1, targets.shape[-1]).numpy()
    return torch.from_numpy(np.linalg.lstsq(F, Y, rcond=None)[0])


def test_a_full_undamped_step_lands_on_the_least_squares_fit_where_the_rule_vanishes():
    net, gen = _network(learn_sigma=False)
    operator = GaussianOperator(0.5)
    states = _trajectory(net, operator, gen, TEMPERATURES, batch=256)
    regression = readout.regression(net, operator, states, TEMPERATURES)
    optimizer = readout.LeastSquaresReadout(net, operator, 1e-3, step_fraction=1.0, memory=0.9, damping=0.0)
    before = plasticity.trajectory_update(net, operator, states, TEMPERATURES, None, False)
    optimizer.accumulate([regression])
    optimizer.step()
    theta = readout.readout_matrix(net)
    solution = _weighted_lstsq(regression)
    assert ((theta - solution).norm() / solution.norm()).item() < 1e-8
    after = plasticity.trajectory_update(net, operator, states, TEMPERATURES, None, False)
    assert after.grad_W.norm() < 1e-8 * before.grad_W.norm()
    assert after.loss < before.loss
    hidden = net.W[net.n_visible:].clone()
    optimizer.accumulate([regression])
    optimizer.step()  # the same minibatch again: the fit is where it was, and the fixed expansion is untouched
    assert torch.allclose(readout.readout_matrix(net), solution, rtol=0, atol=1e-8)
    assert torch.equal(net.W[net.n_visible:], hidden)


def test_a_partial_step_moves_that_fraction_of_the_way_and_follows_the_schedule():
    net, gen = _network(learn_sigma=False)
    operator = GaussianOperator(0.5)
    regression = readout.regression(net, operator, _trajectory(net, operator, gen, TEMPERATURES), TEMPERATURES)
    optimizer = readout.LeastSquaresReadout(net, operator, 1e-3, step_fraction=0.5, damping=1e-3)
    optimizer.accumulate([regression])
    target, start = optimizer.target(), readout.readout_matrix(net)
    optimizer.step()
    assert torch.allclose(readout.readout_matrix(net), start + 0.5 * (target - start), rtol=0, atol=1e-12)
    for group in optimizer.param_groups:  # what run.set_learning_rate does halfway down a schedule
        group["lr"] = 0.25e-3
    middle = readout.readout_matrix(net)
    optimizer.step()
    assert torch.allclose(readout.readout_matrix(net), middle + 0.125 * (target - middle), rtol=0, atol=1e-12)


@pytest.mark.parametrize("rates", [[1.0, 1.0, 1.0], [1.0, 0.5, 0.0]])  # constant, and a schedule run down to 0
def test_the_means_are_bias_corrected_averages_damped_by_the_mean_diagonal(rates):
    weights = [0.8**2, 0.8, 1.0]  # Adam's bias-corrected moving average, whatever the schedule
    net, gen = _network(learn_sigma=False)
    operator = GaussianOperator(0.5)
    optimizer = readout.LeastSquaresReadout(net, operator, 1e-3, memory=0.8, damping=0.01)
    moments = []
    for rate in rates:
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * rate
        regression = readout.regression(net, operator, _trajectory(net, operator, gen, TEMPERATURES, 8),
                                        TEMPERATURES)
        moments.append(readout.moments(*regression))
        optimizer.accumulate([regression])
    A = sum(w * a for w, (a, _) in zip(weights, moments)) / sum(weights)
    C = sum(w * c for w, (_, c) in zip(weights, moments)) / sum(weights)
    damped = A + 0.01 * A.diagonal().mean() * torch.eye(len(A), dtype=A.dtype)
    assert torch.allclose(optimizer.target(), torch.linalg.solve(damped, C), rtol=1e-9, atol=1e-12)


def test_the_noise_levels_keep_adam_and_the_readout_is_not_in_it():
    net, _ = _network()
    optimizer = readout.LeastSquaresReadout(net, GaussianOperator(0.5), 1e-3)
    assert [p for group in optimizer.adam.param_groups for p in group["params"]] == [net.sigma_visible]
    assert optimizer.readout_group["params"] == [net.W, net.b, net.w_T]


def test_the_state_round_trips_so_a_resumed_optimiser_steps_as_the_uninterrupted_one():
    operator = GaussianOperator(0.5)
    runs = []
    for interrupted in (False, True):
        net, gen = _network()
        optimizer = readout.LeastSquaresReadout(net, operator, 1e-2, memory=0.9)
        for k in range(4):
            if interrupted and k == 2:
                state = {"network": net.state_dict(), "optimizer": optimizer.state_dict()}
                net, _ = _network(seed=5)
                optimizer = readout.LeastSquaresReadout(net, operator, 1e-2, memory=0.9)
                net.load_state_dict(state["network"])
                optimizer.load_state_dict(state["optimizer"])
            states = _trajectory(net, operator, gen, TEMPERATURES, 16)
            update = plasticity.trajectory_update(net, operator, states, TEMPERATURES, None, False)
            optimizer.zero_grad()
            plasticity.write_gradients(net, update)
            optimizer.accumulate([readout.regression(net, operator, states, TEMPERATURES)])
            optimizer.step()
        runs.append(net.state_dict())
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


def test_an_adam_state_is_refused_and_a_step_needs_a_minibatch():
    net, _ = _network()
    optimizer = readout.LeastSquaresReadout(net, GaussianOperator(0.5), 1e-3)
    adam_state = torch.optim.Adam(net.parameters()).state_dict()
    with pytest.raises(ValueError, match="not a LeastSquaresReadout state .* written by another training.optimizer"):
        optimizer.load_state_dict(adam_state)
    with pytest.raises(RuntimeError, match="step before any accumulate"):
        optimizer.step()


def test_an_indefinite_gram_matrix_names_the_damping_to_raise():
    net, _ = _network(learn_sigma=False)
    optimizer = readout.LeastSquaresReadout(net, GaussianOperator(0.5), 1e-3, damping=0.0)
    features = torch.zeros(1, 4, readout.readout_matrix(net).shape[0], dtype=torch.float64)
    optimizer.accumulate([(features, torch.zeros(1, 4, 2, dtype=torch.float64), torch.ones(1, dtype=torch.float64))])
    with pytest.raises(TrainingDiverged, match="not positive definite .* raise training.ls_damping above 0"):
        optimizer.step()


def test_other_networks_and_operators_are_refused():
    net, _ = _network()
    with pytest.raises(readout.LeastSquaresError, match="needs the Gaussian operator .* got BernoulliOperator"):
        readout.LeastSquaresReadout(net, BernoulliOperator(0.5), 1e-3)
    with pytest.raises(readout.LeastSquaresError, match="needs the recurrent network .* got Linear"):
        readout.regression(torch.nn.Linear(2, 2), GaussianOperator(0.5), [torch.zeros(1, 2)] * 2, [1.0])


@pytest.mark.parametrize(
    "text, message",
    [
        ("operator: {family: bernoulli}\ntraining: {optimizer: least_squares}\n",
         "spiral.yaml:2: training.optimizer = least_squares needs the Gaussian operator (its loss is quadratic in "
         "the readout), but operator.family is bernoulli; set training.optimizer: adam"),
        ("network: {kind: mlp}\ntraining: {optimizer: least_squares}\n",
         "spiral.yaml:2: training.optimizer = least_squares fits the readout W, b, w_T of the recurrent network, got "
         "network.kind: mlp; set training.optimizer: adam"),
        ("replicas: 2\ntraining: {optimizer: least_squares}\n",
         "spiral.yaml:2: training.optimizer = least_squares is not in the batched replica program (replicas = 2); "
         "set replicas: 1 and run one study per seed, or training.optimizer: adam"),
        ("training: {optimizer: least_squares, autocast: fp16}\n",
         "spiral.yaml:1: training.optimizer = least_squares has no fp16 loss scaling; set training.autocast: bf16 "
         "or none"),
        ("training: {optimizer: least_squares, ls_memory: 1}\n",
         "spiral.yaml:1: training.ls_memory = 1 is out of range (allowed: 0 <= ls_memory < 1)"),
        ("training: {optimizer: least_squares, ls_step: 0}\n",
         "spiral.yaml:1: training.ls_step = 0 is out of range (allowed: 0 < ls_step <= 1)"),
        ("training: {optimizer: lbfgs}\n",
         "spiral.yaml:1: training.optimizer = 'lbfgs' is not one of: adam, least_squares"),
    ],
)
def test_studies_outside_its_reach_are_refused_by_name(text, message):
    with pytest.raises(StudyError) as error:
        parse_study(text, "spiral.yaml")
    assert str(error.value) == message
