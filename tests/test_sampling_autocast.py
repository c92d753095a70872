"""evaluation.autocast: the evaluation's coolings draw their network calls in bfloat16, the bound stays in the
run's float type, and "auto" follows the device's hardware; the key's bad values."""

import pytest
import torch

from asymnet import model as model_module
from asymnet.data import Dataset
from asymnet.dequantization import DEQUANTIZED
from asymnet.evaluate import generate_visible, held_out_bound
from asymnet.model import build_model, native_bfloat16, sampling_precision
from asymnet.study import StudyError, load_study, parse_study, replace_in
from tests.test_pathway import PATHWAY_STUDY

CPU = torch.device("cpu")
EVALUATION = ["evaluation.n_samples=16", "evaluation.n_bound=8", "evaluation.final_mean=true",
              "evaluation.corrector_steps=1"]


def _model_and_data():
    pixels = torch.randint(0, 256, (64, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    data = Dataset("mnist", pixels, pixels[:16], rescaling=DEQUANTIZED, image_shape=(1, 8, 8))
    study = parse_study(PATHWAY_STUDY, overrides=EVALUATION)
    return study, build_model(study, data, CPU, torch.float32), data


def test_bf16_coolings_draw_the_float32_samples_to_bfloat16_rounding():
    """The same cooling (same seed, same draws) under evaluation.autocast: bf16 parts from the float32 one
    by bfloat16's rounding (8 bits of mantissa), carried through the cooling: a few hundredths of the samples'
    spread on this untrained network, not more, and not 0."""
    study, model, data = _model_and_data()
    exact = generate_visible(model, study, data, CPU)
    rounded = generate_visible(model, replace_in(study, "evaluation.autocast", "bf16"), data, CPU)
    assert rounded.dtype == exact.dtype == torch.float32
    assert torch.equal(generate_visible(model, study, data, CPU), exact)  # the float32 cooling repeats
    gap = (rounded - exact).abs().max().item() / exact.std().item()
    assert 1e-4 < gap < 0.1


def test_the_bound_stays_in_the_runs_float_type():
    study, model, data = _model_and_data()
    bound = held_out_bound(model, study, data, CPU, torch.float32, 0)
    assert held_out_bound(model, replace_in(study, "evaluation.autocast", "bf16"), data, CPU, torch.float32, 0) == bound


def test_auto_follows_the_hardware(monkeypatch):
    study = parse_study(PATHWAY_STUDY, overrides=EVALUATION)
    assert sampling_precision(study, torch.device("cpu")) == "none"
    assert sampling_precision(replace_in(study, "evaluation.autocast", "bf16"), torch.device("cpu")) == "bfloat16"
    auto = replace_in(study, "evaluation.autocast", "auto")
    for native, resolved in ((True, "bfloat16"), (False, "none")):
        monkeypatch.setattr(model_module, "native_bfloat16", lambda device, native=native: native)
        assert sampling_precision(auto, torch.device("cpu")) == resolved


@pytest.mark.parametrize("avx512_bf16, amx, native", [(False, False, False), (True, False, True), (False, True, True)])
def test_a_cpu_computes_bfloat16_natively_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert native_bfloat16(torch.device("cpu")) is native


@pytest.mark.parametrize("value", ["fp16", "bfloat16", "true"])
def test_a_bad_autocast_fails_in_one_line(tmp_path, capsys, value):
    from asymnet import run

    path = tmp_path / "study.yaml"
    path.write_text(f"name: autocast\ndata: {{name: spiral}}\nevaluation: {{autocast: {value}}}\n")
    with pytest.raises(StudyError, match=r"study.yaml:3: evaluation.autocast") as error:
        load_study(path)
    assert "\n" not in str(error.value) and "none, bf16, auto" in str(error.value).replace("'", "")
    assert run.main([str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "evaluation.autocast" in err
    assert not (tmp_path / "run").exists()
