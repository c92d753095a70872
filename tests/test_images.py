"""The convolutional operator in the walkback machinery: batched losses, autocast, studies, a whole run."""

import numpy as np
import pytest
import torch

from asymnet import run as run_module
from asymnet import walkback
from asymnet.data import Dataset
from asymnet.dequantization import DEQUANTIZED
from asymnet.evaluate import IMAGE_FIGURES
from asymnet.networks import UNetNetwork
from asymnet.operators import GaussianOperator
from asymnet.runlog import open_log, read_metric, read_summary
from asymnet.study import StudyError, load_study, parse_study
from tests.conftest import REPO, SHARED, needs_shared, run_main
from asymnet.model import build_model, build_network, eval_temperatures, load_data

TINY_UNET = """
seed: 2
data: {name: mnist, n_train: 400, n_test: 100}
network: {kind: unet, unet_channels: 4, unet_channel_mults: [1, 2], unet_res_blocks: 1}
operator: {alpha: 1.0, sigma: 0.05}
walkback: {n_extra_max: 1, heating_factor: 4.0, sigma_max: 1.0}
training: {steps: 4, batch_size: 8, learning_rate: 1.0e-3, learning: autograd}
logging: {metrics_every: 2, weights_every: 2, checkpoint_every: 2, eval_every: 4}
evaluation: {n_samples: 20, n_bound: 10, ep_chains: 0}
"""


def _synthetic_images(n=64, shape=(1, 8, 8), seed=0):
    pixels = torch.randint(0, 256, (n, int(np.prod(shape))), generator=torch.Generator().manual_seed(seed),
                           dtype=torch.uint8)
    return Dataset("mnist", pixels, pixels[:16], rescaling=DEQUANTIZED, image_shape=shape)


@pytest.mark.parametrize("power", [0.0, 0.5])
def test_the_stacked_walkback_loss_of_a_unet_equals_the_step_by_step_loss_and_gradient(power):
    torch.manual_seed(0)
    net = UNetNetwork((1, 8, 8), 8, (1, 2), 1, sigma_init=0.1, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))  # move off the zero-initialised heads
    operator = GaussianOperator(0.7)
    temperatures = [1.0, 1.0, 3.0, 9.0, 27.0]
    s0 = torch.rand(6, 64, dtype=torch.float64)
    states = walkback.heating_trajectory(net, operator, s0, temperatures, torch.Generator().manual_seed(2))
    stacked = walkback.walkback_losses(net, operator, states, temperatures, power)
    grads_stacked = torch.autograd.grad(stacked.sum(), list(net.parameters()))
    net.temperature_rows = False  # the one-call-per-step path
    stepwise = walkback.walkback_losses(net, operator, states, temperatures, power)
    grads_stepwise = torch.autograd.grad(stepwise.sum(), list(net.parameters()))
    assert stacked.shape == (5,)
    torch.testing.assert_close(stacked, stepwise, rtol=1e-12, atol=0)
    scale = max(g.abs().max().item() for g in grads_stepwise)
    for a, b in zip(grads_stacked, grads_stepwise):  # conv biases before a GroupNorm get ~0: compare to the scale
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * scale)


def test_the_stacked_loss_of_a_unet_with_posterior_targets_of_sampled_steps_equals_the_step_by_step_loss():
    """The posterior targets of a whole trajectory, and each row's own sampled steps (walkback.sample_steps,
    temperatures (m, batch, 1)), scored in one call on the stacked states as step by step."""
    net = UNetNetwork((1, 8, 8), 8, (1, 2), 1, sigma_init=0.1, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    operator, heating = GaussianOperator(1.0), walkback.NoiseHeating(0.1)
    temperatures = [1.5, 2.25, 3.375, 5.0625]
    s0 = torch.rand(6, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    states = walkback.heating_trajectory(net, operator, s0, temperatures, torch.Generator().manual_seed(2), heating)
    whole = (states, temperatures, walkback.posterior_targets(operator, heating, states, temperatures))
    sampled = walkback.sample_steps(operator, heating, s0, temperatures, 2, torch.Generator().manual_seed(4),
                                    walkback.ChainNoise(torch.Generator().manual_seed(5)))
    for trajectory, temps, targets in (whole, (sampled.states, sampled.temperatures, sampled.targets)):
        net.temperature_rows = True
        stacked = walkback.walkback_losses(net, operator, trajectory, temps, targets=targets)
        net.temperature_rows = False
        stepwise = walkback.walkback_losses(net, operator, trajectory, temps, targets=targets)
        assert stacked.shape == (len(temps),)
        torch.testing.assert_close(stacked, stepwise, rtol=1e-12, atol=0)


def test_bf16_autocast_trains_close_to_float32_and_the_refusals_name_the_fix():
    data = _synthetic_images()
    base = parse_study(TINY_UNET.replace("name: mnist, n_train: 400, n_test: 100", "name: mnist"))
    losses = {}
    for mode in ("none", "bf16"):
        study = parse_study(TINY_UNET, overrides=[f"training.autocast={mode}"])
        model = build_model(study, data, torch.device("cpu"), torch.float32)
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():  # off the zero-initialised output conv, so the network's arithmetic shows in the loss
            for p in model.network.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        losses[mode] = run_module.train_step(model, study, data, torch.device("cpu"), torch.float32)["loss"]
    assert losses["none"] != losses["bf16"]  # bfloat16 arithmetic really ran
    assert losses["bf16"] == pytest.approx(losses["none"], rel=0.05)
    with pytest.raises(StudyError, match="training.autocast: fp16 needs --device cuda"):
        run_module.check_autocast(parse_study(TINY_UNET, overrides=["training.autocast=fp16"]), torch.device("cpu"))
    local = parse_study("network: {kind: recurrent}\ntraining: {learning: local, autocast: bf16}")
    with pytest.raises(StudyError, match="applies to autograd learning; the local rule runs in the network's dtype"):
        run_module.check_autocast(local, torch.device("cpu"))
    assert base.network.kind == "unet"


def test_a_unet_study_on_toy_data_or_an_impossible_shape_is_refused():
    toy = parse_study("data: {name: spiral}\nnetwork: {kind: unet}")
    with pytest.raises(StudyError, match="network.kind: unet needs an image dataset .* got data.name: spiral"):
        build_network(toy, load_data(toy, None), torch.Generator())
    deep = parse_study(TINY_UNET, overrides=["network.unet_channel_mults=[1, 2, 2, 2, 2]"])
    with pytest.raises(StudyError, match=r"network.unet_channel_mults = \[1, 2, 2, 2, 2\]: image_shape \(1, 8, 8\)"):
        build_network(deep, _synthetic_images(), torch.Generator())


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_parses(path):
    study, _ = load_study(path)
    if study.network.kind == "unet":
        shapes = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "svhn": (3, 32, 32), "celeba64": (3, 64, 64)}
        net = build_network(study, _synthetic_images(2, shapes[study.data.name]), torch.Generator())
        assert net.n_units == int(np.prod(shapes[study.data.name]))


def test_the_paper_schedules_have_20_and_30_walkback_steps_at_evaluation():
    data = _synthetic_images(16, (3, 32, 32))
    for name, steps in (("cifar10_vw20", 20), ("cifar10_vw30", 30), ("celeba64", 30)):
        study, _ = load_study(REPO / "studies" / f"{name}.yaml", ["network.unet_channels=4",
                                                                   "network.unet_channel_mults=[1]",
                                                                   "network.unet_res_blocks=1"])
        model = build_model(study, data, torch.device("cpu"), torch.float32)
        temperatures = eval_temperatures(model, study)
        assert len(temperatures) == steps, name
        assert temperatures[0] == 1.0 and temperatures[-1] >= 1e4 > temperatures[-2]


@needs_shared
def test_a_unet_run_on_mnist_writes_bits_per_dim_symmetry_and_a_sample_grid(tmp_path, capsys):
    study = tmp_path / "unet.yaml"
    study.write_text(TINY_UNET)
    result = run_main(capsys, study, "--out", tmp_path / "run", "--data", SHARED, "--quiet")
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path / "run")
    assert summary.status == "finished" and list(summary.attrs["image_shape"]) == [1, 28, 28]
    assert np.isfinite(summary.evals["bound_bits_per_dim"]) and summary.evals["bound_bits_per_dim"] > 0
    for name in IMAGE_FIGURES:
        assert all(np.isfinite(summary.evals[prefix + name]) for prefix in ("", "untrained_", "test_")), name
    # the test images are not training images: their nearest one is some pixels away (28 = the diagonal)
    assert 0 < summary.evals["test_nearest_train_distance_p05"] <= summary.evals["test_nearest_train_distance"] < 28
    steps, cosine = read_metric(tmp_path / "run" / "log.h5", "symmetry_cosine")
    assert steps.tolist() == [2, 4] and (np.abs(cosine) <= 1).all()
    with open_log(tmp_path / "run") as log:
        assert log["samples/final"].shape == (20, 784)
    assert (tmp_path / "run" / "samples.png").stat().st_size > 1000
