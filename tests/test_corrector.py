"""evaluation.corrector_steps and corrector_bands: the coolings' corrector steps (walkback.Corrector) against the Gaussian case,
where the walk back is the exact posterior of the noise heating and every law along the cooling is known in
closed form, and the key's bad values."""

import math

import pytest
import torch
from torch import nn

from asymnet import run, walkback
from asymnet.networks.recurrent import inverse_softplus
from asymnet.operators import Drive, GaussianOperator
from asymnet.study import StudyError, load_study

SIGMA_0 = 0.5
DATA_VAR = 0.3
TEMPERATURES = [1.0, 2.0, 4.0]
OPERATOR = GaussianOperator(1.0, "sqrt_T")
HEATING = walkback.NoiseHeating(SIGMA_0)


def _taus() -> list[float]:
    return [T * SIGMA_0**2 for T in TEMPERATURES]  # the variance the heating adds at T_t: g(T)^2 sigma_0^2


def _marginal_vars() -> list[float]:
    """v_0 .. v_K: the heated data's variance at each level (zero-mean Gaussian data of variance DATA_VAR)."""
    out = [DATA_VAR]
    for tau in _taus():
        out.append(out[-1] + tau)
    return out


class ExactPosterior(nn.Module):
    """p_{T_t}(s_{t-1} | s_t) = N(c_t s_t, w_t), c_t = v_{t-1} / v_t, w_t = v_{t-1} tau_t / v_t: the exact
    walk back of the noise heating of the data above (the temperatures are distinct, so T names the level)."""

    def forward(self, s: torch.Tensor, T: float) -> Drive:
        t = TEMPERATURES.index(T) + 1
        v, tau = _marginal_vars(), _taus()
        c, w = v[t - 1] / v[t], v[t - 1] * tau[t - 1] / v[t]
        sigma = inverse_softplus(math.sqrt(w) / OPERATOR.temperature_factor(T))
        return Drive(c * s, s.new_full((), sigma))


def _p_star(var: float, n_units: int) -> walkback.PStar:
    p_star = walkback.PStar(n_units).double()
    p_star.second_moment.fill_(var)
    return p_star


def _predicted_end_var(start_var: float, steps: int | list[int], final_mean: bool) -> float:
    """The cooling's end variance by the exact recursion: a walk back at T_t maps a variance a to
    c_t^2 a + w_t (c_t^2 a for the last step's mean), a corrector step to c_t^2 (a + tau_t) + w_t.
    ``steps``: the count at every level, or one count per level t = 1..K."""
    v, tau, a = _marginal_vars(), _taus(), start_var
    counts = steps if isinstance(steps, list) else [steps] * len(TEMPERATURES)
    for t in range(len(TEMPERATURES), 0, -1):
        c, w = v[t - 1] / v[t], v[t - 1] * tau[t - 1] / v[t]
        for k in range(1 + counts[t - 1]):
            heated = a + (tau[t - 1] if k else 0.0)
            last = final_mean and t == 1 and k == counts[t - 1]
            a = c * c * heated + (0.0 if last else w)
    return a


def _cool(start_var: float, steps: int, final_mean: bool = False, n: int = 40_000, seed: int = 0,
          bands: tuple = ()) -> torch.Tensor:
    corrector = walkback.Corrector(HEATING, steps, bands)
    return walkback.generate(ExactPosterior(), OPERATOR, _p_star(start_var, 2), TEMPERATURES, n,
                             torch.Generator().manual_seed(seed), final_mean=final_mean, corrector=corrector)


@pytest.mark.parametrize("steps", [1, 3])
def test_corrector_steps_keep_the_heated_law_when_the_walk_back_is_exact(steps):
    # from the exact hot-end law, every level's law is the heated data's, and a corrector step keeps it
    assert _predicted_end_var(_marginal_vars()[-1], steps, False) == pytest.approx(DATA_VAR, rel=1e-12)
    end = _cool(_marginal_vars()[-1], steps)
    assert end.var(0).mean().item() == pytest.approx(DATA_VAR, rel=0.03)
    assert end.mean(0).abs().max().item() < 0.02


@pytest.mark.parametrize("final_mean", [False, True])
def test_corrector_steps_pull_a_wrong_start_towards_the_data_as_the_recursion_says(final_mean):
    wrong = 4.0 * _marginal_vars()[-1]  # a p* far too wide
    exact = _predicted_end_var(_marginal_vars()[-1], 0, final_mean)  # DATA_VAR, or the last mean's v_0^2 / v_1
    errors = {}
    for steps in (0, 1, 3):
        predicted = _predicted_end_var(wrong, steps, final_mean)
        got = _cool(wrong, steps, final_mean).var(0).mean().item()
        assert got == pytest.approx(predicted, rel=0.03), steps
        errors[steps] = abs(predicted - exact)
    assert errors[3] < errors[1] < errors[0]
    assert errors[3] < 0.1 * errors[0]


def test_bands_give_each_level_its_own_count():
    corrector = walkback.Corrector(HEATING, 1, ((math.inf, 3.0, 0), (3.0, 1.5, 5)))
    assert [corrector.steps_at(T) for T in (400.0, 4.0, 3.0, 2.0, 1.5, 1.0)] == [0, 0, 5, 5, 1, 1]
    assert corrector.runs_at([4.0, 400.0]) is False and corrector.runs_at([1.0]) is True


@pytest.mark.parametrize("final_mean", [False, True])
def test_banded_corrector_steps_follow_the_recursion_level_by_level(final_mean):
    # one step at the hottest level (T = 4), none at T = 2 and T = 1 (the corrector_steps no band covers)
    wrong = 4.0 * _marginal_vars()[-1]
    predicted = _predicted_end_var(wrong, [0, 0, 1], final_mean)
    for uniform in (0, 1):  # the recursion tells this cooling from both uniform ones by more than 5 %
        assert abs(predicted / _predicted_end_var(wrong, uniform, final_mean) - 1) > 0.05
    got = _cool(wrong, 0, final_mean, bands=((math.inf, 3.0, 1),)).var(0).mean().item()
    assert got == pytest.approx(predicted, rel=0.02)


def test_a_banded_cooling_is_the_level_by_level_cooling_draw_for_draw():
    p_star, bands = _p_star(_marginal_vars()[-1], 2), ((math.inf, 3.0, 2), (3.0, 0.0, 1))
    whole = walkback.generate(ExactPosterior(), OPERATOR, p_star, TEMPERATURES, 50, torch.Generator().manual_seed(5),
                              final_mean=True, corrector=walkback.Corrector(HEATING, 0, bands))
    gen = torch.Generator().manual_seed(5)
    s = p_star.sample(50, gen)
    for count, T in zip([2, 1, 1], reversed(TEMPERATURES)):
        s = walkback.Corrector(HEATING, count).cool(ExactPosterior(), OPERATOR, s, [T], gen, T == TEMPERATURES[0])
    assert torch.equal(whole, s)


def test_no_corrector_steps_is_the_plain_cooling_draw_for_draw():
    p_star = _p_star(_marginal_vars()[-1], 2)
    plain = walkback.generate(ExactPosterior(), OPERATOR, p_star, TEMPERATURES, 50, torch.Generator().manual_seed(3))
    zero = walkback.generate(ExactPosterior(), OPERATOR, p_star, TEMPERATURES, 50, torch.Generator().manual_seed(3),
                             corrector=walkback.Corrector(HEATING, 0))
    assert torch.equal(plain, zero)


def test_corrector_steps_hold_the_known_units_at_every_step():
    known = torch.tensor([True, False])
    values = torch.full((500, 2), 0.7, dtype=torch.float64)
    end = walkback.generate(ExactPosterior(), OPERATOR, _p_star(_marginal_vars()[-1], 2), TEMPERATURES, 500,
                            torch.Generator().manual_seed(4), known=known, values=values,
                            corrector=walkback.Corrector(HEATING, 2), final_mean=True)
    assert torch.equal(end[:, 0], values[:, 0])
    assert end[:, 1].std().item() > 0.1  # the unknown unit is drawn


def _study_file(tmp_path, text: str):
    path = tmp_path / "study.yaml"
    path.write_text("name: corrector\ndata: {name: spiral}\n" + text)
    return path


@pytest.mark.parametrize("text, message", [
    ("evaluation: {corrector_steps: 2}\n",
     r"study.yaml:3: evaluation.corrector_steps = 2 heats each cooling step again with the noise heating's step, but "
     r"walkback.heating_kernel is model; set walkback.heating_kernel: noise or evaluation.corrector_steps: 0$"),
    ("walkback: {heating_kernel: noise}\nevaluation: {corrector_steps: -1}\n", "evaluation.corrector_steps"),
    ("walkback: {heating_kernel: noise}\nevaluation: {corrector_steps: two}\n", "evaluation.corrector_steps"),
])
def test_bad_corrector_steps_fail_in_one_line_with_exit_status_2(tmp_path, capsys, text, message):
    _fails_in_one_line(tmp_path, capsys, text, message, "evaluation.corrector_steps")


FORM = (r"; write each band as \[T_high, T_low, steps\] with T_high > T_low >= 0 and steps a non-negative "
        r"integer$")


@pytest.mark.parametrize("bands, message", [
    ("[[50, 5]]", r"study.yaml:4: evaluation.corrector_bands\[0\] = \[50, 5\] is not a \[T_high, T_low, steps\] "
                  r"triplet" + FORM),
    ("[[5, 50, 4]]", r"evaluation.corrector_bands\[0\] = \[5, 50, 4\] does not give T_high > T_low >= 0" + FORM),
    ("[[50, -1, 4]]", r"evaluation.corrector_bands\[0\] = \[50, -1, 4\] does not give T_high > T_low >= 0" + FORM),
    ("[[50, 5, 1.5]]", r"evaluation.corrector_bands\[0\] = \[50, 5, 1.5\] has steps 1.5" + FORM),
    ("[[50, 5, -2]]", r"evaluation.corrector_bands\[0\] = \[50, 5, -2\] has steps -2" + FORM),
    ("[[50, 5, 2], [10, 0, 3]]", r"evaluation.corrector_bands\[1\] and \[0\] overlap \(a level would take two "
                                 r"counts\); make each band's T_low at least the next colder band's T_high$"),
    ("7", r"evaluation.corrector_bands = 7 is not a list"),
])
def test_bad_corrector_bands_fail_in_one_line_with_exit_status_2(tmp_path, capsys, bands, message):
    text = f"walkback: {{heating_kernel: noise}}\nevaluation: {{corrector_bands: {bands}}}\n"
    _fails_in_one_line(tmp_path, capsys, text, message, "evaluation.corrector_bands")


def test_corrector_bands_need_the_noise_heating(tmp_path, capsys):
    _fails_in_one_line(tmp_path, capsys, "evaluation: {corrector_bands: [[50, 5, 4]]}\n",
                       r"study.yaml:3: evaluation.corrector_bands gives corrector steps, which heat each cooling step "
                       r"again with the noise heating's step, but walkback.heating_kernel is model; set "
                       r"walkback.heating_kernel: noise or evaluation.corrector_bands: \[\]$",
                       "evaluation.corrector_bands")
    load_study(_study_file(tmp_path, "evaluation: {corrector_bands: [[50, 5, 0]]}\n"))  # no steps: nothing to heat


def _fails_in_one_line(tmp_path, capsys, text, message, key):
    path = _study_file(tmp_path, text)
    with pytest.raises(StudyError, match=message) as error:
        load_study(path)
    assert "\n" not in str(error.value)
    assert run.main([str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err
    assert not (tmp_path / "run").exists()
