"""The long run's two chains against the Gaussian case's exact stationary laws: the heated chain
(walkback.heated_chain, evaluation.long_run_chain: heated) keeps the data's law where the walk back is the
heating's exact posterior; the operator's own chain at the same level settles at about half its variance."""

import pytest
import torch
from torch import nn

from asymnet import run, walkback
from asymnet.long_run import chain_level
from asymnet.model import cooling_corrector, eval_temperatures, load_run
from asymnet.networks.recurrent import inverse_softplus
from asymnet.operators import Drive, GaussianOperator
from asymnet.runlog import open_log
from asymnet.study import StudyError, load_study
from tests.conftest import TINY_STUDY, run_main

V, SIGMA_0, T = 1.0, 0.2, 1.1  # the data's variance, the heating's noise level, the level both chains run at


class ExactPosterior(nn.Module):
    """p_T(s_0 | s) for s = s_0 + sqrt(tau) eps, s_0 ~ N(0, V): mean a s, variance a tau, a = V / (V + tau)."""

    def __init__(self, tau: float):
        super().__init__()
        self.a = V / (V + tau)
        self.level = inverse_softplus((self.a * tau) ** 0.5 / T**0.5)  # g(T) softplus(level) = sqrt(a tau)

    def forward(self, s: torch.Tensor, T: float) -> Drive:
        return Drive(self.a * s, s.new_full((), self.level))


@pytest.fixture
def chains():
    heating, operator = walkback.NoiseHeating(SIGMA_0), GaussianOperator(alpha=1.0)
    tau = heating.step_variances(operator, T)
    network = ExactPosterior(tau)
    data = torch.randn(40000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * V**0.5
    return heating, operator, network, tau, data


def test_the_heated_chain_keeps_the_datas_variance_and_the_operators_own_chain_halves_it(chains):
    heating, operator, network, tau, data = chains
    assert operator.std(network(data, T), T).item() ** 2 == pytest.approx(network.a * tau)
    heated = walkback.heated_chain(network, operator, heating, data, 300, T, torch.Generator().manual_seed(1))
    plain = walkback.run_chain(network, operator, data, 300, torch.Generator().manual_seed(2), T=T, fused=False)
    assert heated.var().item() == pytest.approx(V, rel=0.03)
    assert heated.mean().item() == pytest.approx(0.0, abs=0.02)
    assert plain.var().item() == pytest.approx(V * (V + tau) / (2 * V + tau), rel=0.03)  # 0.51


def test_a_heated_step_is_a_heating_step_then_a_draw_of_the_walk_back(chains):
    heating, operator, network, tau, data = chains
    s = data[:5]
    got = walkback.heated_chain(network, operator, heating, s, 1, T, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    heated = s + tau**0.5 * torch.randn(s.shape, generator=gen, dtype=s.dtype)
    want = network.a * heated + (network.a * tau) ** 0.5 * torch.randn(s.shape, generator=gen, dtype=s.dtype)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    assert torch.equal(walkback.heated_chain(network, operator, heating, s, 0, T, None), s)


def _study_file(tmp_path, text: str):
    path = tmp_path / "study.yaml"
    path.write_text("name: heated\ndata: {name: spiral}\n" + text)
    return path


@pytest.mark.parametrize("text, message", [
    ("evaluation: {long_run_chain: heated}\n",
     r"study.yaml:3: evaluation.long_run_chain: heated heats by the noise heating's step, but "
     r"walkback.heating_kernel is model; set walkback.heating_kernel: noise or evaluation.long_run_chain: operator$"),
    ("walkback: {heating_kernel: noise}\nevaluation: {long_run_chain: heat}\n",
     r"study.yaml:4: evaluation.long_run_chain = 'heat' is not one of: operator, heated"),
    ("walkback: {heating_kernel: noise}\nevaluation: {long_run_chain: 1}\n", "evaluation.long_run_chain"),
])
def test_bad_long_run_chains_fail_in_one_line_with_exit_status_2(tmp_path, capsys, text, message):
    path = _study_file(tmp_path, text)
    with pytest.raises(StudyError, match=message) as error:
        load_study(path)
    assert "\n" not in str(error.value)
    assert run.main([str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "evaluation.long_run_chain" in err
    assert not (tmp_path / "run").exists()


NOISE_HEATED = TINY_STUDY.replace("walkback: {n_extra_max: 2, settle_steps: 2}",
                                  "walkback: {n_extra_max: 0, settle_steps: 2, heating_kernel: noise, "
                                  "target: posterior, heating_factor: 1.5}")


def test_the_studys_heated_long_run_is_the_cooling_continued_by_heated_steps_at_the_coldest_level(tmp_path, capsys):
    study = tmp_path / "tiny.yaml"
    study.write_text(NOISE_HEATED)
    result = run_main(capsys, study, "--out", tmp_path / "run", "--quiet", "--set", "training.steps=10",
                      "--set", "evaluation.long_run_steps=20", "--set", "evaluation.long_run_chains=30",
                      "--set", "evaluation.long_run_chain=heated")
    assert result.returncode == 0, result.stderr
    with open_log(tmp_path / "run") as log:
        assert log.attrs["long_run"].startswith("30 chains, 20 heated steps at T_1 = 1.5 after cooling from p*")
        stored = torch.from_numpy(log["samples/long_run/step_0000020"][()])
    trained = load_run(tmp_path / "run")
    m = trained.model
    temps = eval_temperatures(m, trained.study)
    assert temps[0] == 1.5 and chain_level(trained) == 1.5
    gen = torch.Generator().manual_seed(trained.study.seed)  # the run's long run draws from the study's seed
    s = walkback.generate(m.network, m.operator, m.p_star, temps, 30, gen, corrector=cooling_corrector(m, trained.study))
    s = walkback.heated_chain(m.network, m.operator, m.heating, s, 20, 1.5, gen)
    assert torch.equal(stored, s[:, :2])


def test_sample_refuses_the_heated_chain_for_a_model_heated_run_in_one_line(tiny_run, capsys):
    before = (tiny_run / "log.h5").read_bytes()
    result = run_main(capsys, tiny_run, "--steps", "10", "--chain", "heated", module="asymnet.sample")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "evaluation.long_run_chain: heated heats by the noise heating's step" in result.stderr
    assert (tiny_run / "log.h5").read_bytes() == before
