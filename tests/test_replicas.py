"""Independent replicas: replica r of a batched run (the training code with a leading replica axis) is the
single run of replica_study(study, r), to float64 round-off; bad replica studies fail with exact messages;
each replica logs to its own group; resume."""

import shutil

import numpy as np
import pytest
import torch

from asymnet import run
from asymnet.networks import RecurrentNetwork
from asymnet.runlog import LogError, open_log, read_metric, read_summary, read_weights
from asymnet.study import StudyError, parse_study, replica_study
from tests.conftest import run_main
from asymnet.model import build_model, build_replica_model, load_data, save_checkpoint

CPU, FLOAT64 = torch.device("cpu"), torch.float64
STEPS = 20
RELATIVE = 1e-10  # float64: batched and single GEMMs sum in different orders, nothing else differs

SMALL = """\
seed: 0
replicas: 3
data: {{name: spiral, n_train: 500, n_test: 100}}
network: {{kind: recurrent, n_hidden: 6, hidden_units: {hidden}, temperature_conditioned: {conditioned}}}
operator: {{family: {family}, sigma: 0.1}}
walkback: {{n_extra_max: 3, settle_steps: 3}}
training: {{steps: 20, batch_size: 16, learning_rate: 3.0e-3, learning: {learning}, dtype: float64, lr_schedule: cosine}}
"""


@pytest.mark.parametrize("hidden", ["slow", "fast"])
def test_a_network_with_replicas_is_its_single_networks_side_by_side(hidden):
    gen = torch.Generator().manual_seed(0)
    singles = [RecurrentNetwork(2, 5, generator=gen, temperature_input=True, hidden_units=hidden).double()
               for _ in range(3)]
    stacked = RecurrentNetwork.stack(singles)
    assert stacked.replicas == 3 and stacked.W.shape == (3, 7, 7) and stacked.sigma_hidden.shape == (3, 5)
    m = stacked.n_units
    s = torch.randn(4, 3, 8, m, generator=gen, dtype=FLOAT64)  # (K, R, batch, n_units)
    T = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=FLOAT64).view(4, 1, 1, 1).expand(4, 3, 1, 1)
    drive, stepwise = stacked(s, T), stacked(s[1], T[1])  # a stacked trajectory, and one step (R, batch, n)
    assert drive.mu.shape == (4, 3, 8, m) and drive.sigma.shape == (3, 1, m)
    for r, single in enumerate(singles):
        torch.testing.assert_close(stepwise.mu[r], single(s[1, r], 2.0).mu, rtol=1e-13, atol=1e-13)
        for k in range(4):
            torch.testing.assert_close(drive.mu[k, r], single(s[k, r], T[k, 0].item()).mu, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(drive.sigma[r, 0], single.sigma)
    fresh = RecurrentNetwork(2, 5, temperature_input=True, hidden_units=hidden).double()
    stacked.copy_replica(2, fresh)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), singles[2].state_dict().values()))
    built = RecurrentNetwork(2, 5, temperature_input=True, hidden_units=hidden, replicas=3)
    assert {name: tuple(value.shape) for name, value in built.state_dict().items()} == \
        {name: tuple(value.shape) for name, value in stacked.state_dict().items()}


def _batched(study):
    data = load_data(study, None)
    model = build_replica_model(study, data, None, CPU, FLOAT64)
    losses = [[row["loss"] for row in run.train_members(model, study, data, CPU, FLOAT64, step, True)]
              for step in range(1, STEPS + 1)]
    return model, np.array(losses).T  # (replicas, steps)


def _single(study):
    data = load_data(study, None)
    model = build_model(study, data, CPU, FLOAT64)
    losses = []
    for step in range(1, STEPS + 1):
        run.set_learning_rate(model.optimizer, study, step)
        losses.append(run.train_step(model, study, data, CPU, FLOAT64)["loss"])
    return model, np.array(losses)


def _assert_replicas_equal_single_runs(study):
    batched, batched_losses = _batched(study)
    for r in range(study.replicas):
        single, single_losses = _single(replica_study(study, r))
        np.testing.assert_allclose(batched_losses[r], single_losses, rtol=RELATIVE)
        for name, value in single.network.named_parameters():
            stacked = getattr(batched.network, name)[r]
            scale = value.abs().max().item()
            assert (stacked - value).abs().max().item() <= RELATIVE * scale, (r, name)
        for name in ("first_moment", "second_moment"):
            torch.testing.assert_close(getattr(batched.p_star, name)[r], getattr(single.p_star, name),
                                       rtol=RELATIVE, atol=RELATIVE)


@pytest.mark.parametrize("hidden, conditioned, family, learning", [
    ("slow", "true", "gaussian", "local"),
    ("slow", "false", "gaussian", "local"),
    ("fast", "true", "gaussian", "local"),
    ("fast", "false", "gaussian", "local"),
    ("slow", "true", "gaussian", "autograd"),
    ("fast", "true", "gaussian", "autograd"),
    ("slow", "true", "bernoulli", "local"),
])
def test_each_replica_equals_the_single_run_with_its_seed(hidden, conditioned, family, learning):
    study = parse_study(SMALL.format(hidden=hidden, conditioned=conditioned, family=family, learning=learning))
    assert [replica_study(study, r).seed for r in range(3)] == [0, 1, 2]
    _assert_replicas_equal_single_runs(study)


@pytest.mark.parametrize("learning", ["local", "autograd"])
def test_replicas_with_step_weights_equal_the_single_runs(learning):
    text = SMALL.format(hidden="slow", conditioned="true", family="gaussian", learning=learning)
    study = parse_study(text.replace("settle_steps: 3}", "settle_steps: 3, step_weight_power: 0.5}"))
    assert study.walkback.step_weight_power == 0.5
    _assert_replicas_equal_single_runs(study)


@pytest.mark.parametrize("hidden", ["slow", "fast"])
def test_replicas_heated_by_noise_equal_the_single_runs(hidden):
    text = SMALL.format(hidden=hidden, conditioned="true", family="gaussian", learning="local")
    study = parse_study(text.replace("settle_steps: 3}", "settle_steps: 3, heating_kernel: noise}"))
    assert study.walkback.heating_kernel == "noise"
    _assert_replicas_equal_single_runs(study)


@pytest.mark.parametrize("learning", ["local", "autograd"])
def test_replicas_with_the_anchor_and_noisy_starts_equal_the_single_runs(learning):
    text = SMALL.format(hidden="fast", conditioned="true", family="gaussian", learning=learning)
    study = parse_study(text + "anchor: {start_noise: 0.3, start_noise_fraction: 0.5, weight: 4.0, bandwidth: 0.1, "
                               "wide: 0.5}\n")
    assert study.anchor.weight == 4.0 and study.replicas == 3
    _assert_replicas_equal_single_runs(study)


@pytest.mark.parametrize("key, values", [
    ("training.learning_rate", [1.0e-3, 3.0e-3, 1.0e-2]),
    ("network.init_scale", [0.5, 1.0, 2.0]),
    ("seed", [7, 3, 11]),
])
def test_a_swept_key_gives_each_replica_the_single_run_with_its_value(key, values):
    study = parse_study(SMALL.format(hidden="slow", conditioned="true", family="gaussian", learning="local")
                        + f"replica_sweep: {{key: {key}, values: {values}}}\n")
    single = replica_study(study, 2)
    section, _, leaf = key.rpartition(".")
    assert getattr(getattr(single, section) if section else single, leaf) == values[2]
    assert single.seed == (values[2] if key == "seed" else 0) and single.replicas == 1
    _assert_replicas_equal_single_runs(study)


@pytest.mark.parametrize("text, message", [
    ("replicas: 0\n", "s.yaml:1: replicas = 0 is out of range (allowed: replicas >= 1)"),
    ("replicas: 3\nreplica_sweep: {key: training.learning_rate, values: [1.0e-3, 2.0e-3]}\n",
     "s.yaml:2: replica_sweep.values has 2 values but replicas = 3; give one value per replica"),
    ("replicas: 2\nreplica_sweep: {key: operator.alpha, values: [0.1, 0.2]}\n",
     "s.yaml:2: replica_sweep.key = 'operator.alpha' cannot differ between replicas, which run as one batched "
     "program; sweepable keys: seed, training.learning_rate, network.init_scale (run one study per value of any "
     "other key)"),
    ("replicas: 2\nnetwork: {kind: mlp}\n",
     "s.yaml:1: replicas = 2 needs network.kind: recurrent (the replicas are stacked weight matrices W of shape "
     "(replicas, n, n)), got network.kind: mlp; set replicas: 1 and run one study per seed"),
    ("replicas: 2\nreplica_sweep: {key: seed, values: [1, -1]}\n",
     "s.yaml:2: replica_sweep.values[1]: seed = -1 is out of range (allowed: seed >= 0)"),
    ("replicas: 2\nreplica_sweep: {key: training.learning_rate, values: 0.1}\n",
     "s.yaml:2: replica_sweep.values = 0.1 is not a list (expected e.g. [1.0e-3, 3.0e-3])"),
    ("replicas: 2\nreplica_sweep: {values: [1, 2]}\n",
     "s.yaml:2: replica_sweep.values given without replica_sweep.key; name the key they set (one of: seed, "
     "training.learning_rate, network.init_scale)"),
    ("replicas: 2\nevaluation: {long_run_steps: 100}\n",
     "s.yaml:2: evaluation.long_run_steps = 100 reads a single run's checkpoint, but replicas = 2; set "
     "evaluation.long_run_steps: 0"),
])
def test_bad_replica_studies_fail_with_exact_messages(text, message):
    with pytest.raises(StudyError) as caught:
        parse_study(text, "s.yaml")
    assert str(caught.value) == message


def test_a_replica_override_is_checked_like_the_file():
    with pytest.raises(StudyError) as caught:
        parse_study("network: {kind: mlp}\n", "s.yaml", ["replicas=4"])
    assert str(caught.value).startswith("replicas = 4 needs network.kind: recurrent")


REPLICA_STUDY = """\
name: tinyrep
seed: 3
replicas: 3
replica_sweep: {key: training.learning_rate, values: [1.0e-3, 2.0e-3, 4.0e-3]}
data: {name: spiral, n_train: 1000, n_test: 200}
network: {kind: recurrent, n_hidden: 6}
operator: {family: gaussian, alpha: 0.5, sigma: 0.1, learn_sigma: true}
walkback: {n_extra_max: 2, settle_steps: 2}
training: {steps: 40, batch_size: 32, learning_rate: 1.0e-3, learning: local, lr_schedule: cosine}
logging: {metrics_every: 5, weights_every: 20, checkpoint_every: 10, eval_every: 20}
evaluation: {n_samples: 100, n_bound: 50, ep_chains: 4, ep_steps: 20, ep_burn_in: 5}
"""


@pytest.fixture(scope="module")
def replica_run(tmp_path_factory):
    """A finished 3-replica run, and a copy of its checkpoint at step 20 (kept as training passed it)."""
    folder = tmp_path_factory.mktemp("replicas")
    study = folder / "tinyrep.yaml"
    study.write_text(REPLICA_STUDY)
    saved = save_checkpoint

    def keep_step_20(path, model, step):
        saved(path, model, step)
        if step == 20:
            shutil.copyfile(path, folder / "step20.pt")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "save_checkpoint", keep_step_20)
        assert run.main([str(study), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder


def test_each_replica_has_its_own_log_group_read_back_by_replica(replica_run):
    log = replica_run / "run" / "log.h5"
    summary = read_summary(log)
    assert summary.status == "finished" and summary.attrs["replicas"] == 3
    assert [replica.attrs["swept_value"] for replica in summary.replicas] == [1.0e-3, 2.0e-3, 4.0e-3]
    assert [replica.attrs["seed"] for replica in summary.replicas] == [3, 3, 3]
    assert set(summary.metrics) == {"wall_time"}  # the root keeps only what the replicas share
    losses = []
    for r, replica in enumerate(summary.replicas):
        steps, loss = read_metric(log, "loss", replica=r)
        assert steps.tolist() == list(range(5, 41, 5)) and np.isfinite(loss).all()
        losses.append(loss)
        snap_steps, snapshots = read_weights(log, "W", replica=r)
        assert snap_steps.tolist() == [20, 40] and snapshots.shape == (2, 8, 8)
        W = snapshots[-1].astype(np.float64)
        assert read_metric(log, "symmetry_cosine", replica=r)[1][-1] == pytest.approx((W * W.T).sum() / (W * W).sum(),
                                                                                       rel=1e-5)
        assert read_metric(log, "bound", replica=r)[0].tolist() == [20, 40]
        for name in ("bound", "mmd", "sample_log_density"):
            assert np.isfinite(replica.evals[name])
        assert (replica_run / "run" / f"replica_{r}" / "samples.png").stat().st_size > 1000
    assert not np.array_equal(losses[0], losses[2])  # each group holds its own replica
    with open_log(log) as f:
        for r in range(3):
            assert f[f"replicas/{r}/samples/final"].shape == (100, 2)
            assert np.isfinite(f[f"replicas/{r}/samples/final"][()]).all()
        assert f["samples/learning_window"].shape == (41, 3)
    state = torch.load(replica_run / "run" / "checkpoint.pt", weights_only=True)
    assert state["network"]["W"].shape == (3, 8, 8) and state["generator"].shape[0] == 3
    np.testing.assert_allclose(state["network"]["W"][1].numpy(), read_weights(log, "W", replica=1)[1][-1], rtol=1e-6)
    with pytest.raises(LogError, match=r"has no replica 3; it has replicas 0\.\.2$"):
        read_metric(log, "loss", replica=3)


def test_inspect_shows_a_column_per_replica(replica_run, capsys):
    result = run_main(capsys, replica_run / "run", module="asymnet.inspect")
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("replicas (3)")[1].splitlines()
    assert table[1].split() == ["replica", "0", "1", "2"]
    assert any(line.split()[:4] == ["swept_value", "0.001", "0.002", "0.004"] for line in table)
    assert any(line.split()[0] == "mmd" and len(line.split()) == 4 for line in table)


def test_a_run_resumed_from_a_mid_run_checkpoint_ends_equal_to_the_uninterrupted_one(replica_run, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(replica_run / "run", resumed)
    shutil.copyfile(replica_run / "step20.pt", resumed / "checkpoint.pt")
    assert torch.load(resumed / "checkpoint.pt", weights_only=True)["step"] == 20
    assert run.main(["--resume", str(resumed), "--quiet"]) == 0
    a = torch.load(resumed / "checkpoint.pt", weights_only=True)
    b = torch.load(replica_run / "run" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 40
    for part in ("network", "p_star"):
        for name in b[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    assert torch.equal(a["generator"], b["generator"])
    for r in range(3):
        steps_a, loss_a = read_metric(resumed / "log.h5", "loss", replica=r)
        steps_b, loss_b = read_metric(replica_run / "run" / "log.h5", "loss", replica=r)
        assert np.array_equal(steps_a, steps_b) and np.array_equal(loss_a, loss_b)
        assert read_summary(resumed).replicas[r].evals == read_summary(replica_run / "run").replicas[r].evals
