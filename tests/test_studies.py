"""The shipped studies: they parse, the untrained model fails the toy quality bound, training meets it."""

import pytest
import torch

from asymnet.data import load_dataset
from asymnet.metrics.quality import mmd2_rbf
from asymnet.runlog import read_summary
from asymnet.study import load_study
from tests.conftest import REPO, run_cli
from asymnet.evaluate import generate_visible
from asymnet.model import build_model

STUDIES = sorted((REPO / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_shipped_study_parses(path):
    study, text = load_study(path)
    assert study.name == path.stem and text == path.read_text()


@pytest.mark.parametrize("name", ["spiral", "mog"])
def test_the_untrained_network_fails_the_mmd_bound(name):
    study, _ = load_study(REPO / "studies" / f"{name}.yaml")
    data = load_dataset(study.data.name, 5000, 2000, None, torch.Generator().manual_seed(1))
    model = build_model(study, data, torch.device("cpu"), torch.float32)
    samples = generate_visible(model, study, data, torch.device("cpu"))
    mmd = mmd2_rbf(samples, data.test)
    baseline = mmd2_rbf(data.toy.sample(2000, torch.Generator().manual_seed(2)),
                        data.toy.sample(2000, torch.Generator().manual_seed(3)))
    assert mmd > 3 * baseline


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spiral", "mog"])
def test_a_trained_toy_study_matches_its_data(name, tmp_path):
    result = run_cli(REPO / "studies" / f"{name}.yaml", "--out", tmp_path / name, "--quiet", timeout=1800)
    assert result.returncode == 0, result.stderr
    evals = read_summary(tmp_path / name).evals
    assert evals["mmd"] < 3 * evals["mmd_baseline"]
    if name == "mog":
        assert abs(evals["sample_log_density"] - evals["data_log_density"]) < 0.2


_PROP1_OVERRIDES = {
    "spiral": ["walkback.n_extra_max=10", "anchor.start_noise=0.3", "anchor.start_noise_fraction=0.2",
               "anchor.weight=64", "anchor.bandwidth=0.035"],
    "mog": ["walkback.n_extra_max=30", "anchor.start_noise=0.5", "anchor.start_noise_fraction=0.2",
            "anchor.weight=256", "anchor.bandwidth=0.07", "anchor.wide=0.5",
            "network.n_hidden=1024"],
}


@pytest.mark.parametrize("name", ["spiral", "mog"])
def test_a_prop1_study_is_its_toy_study_with_the_measured_overrides(name):
    """studies/<toy>_prop1.yaml is what the README's Proposition 1 rows measured: <toy>.yaml with their --set
    flags, plus the long run; nothing else differs."""
    import dataclasses

    prop1, _ = load_study(REPO / "studies" / f"{name}_prop1.yaml")
    measured, _ = load_study(REPO / "studies" / f"{name}.yaml", [
        "operator.sigma=0.05", "operator.learn_sigma=false", "training.optimizer=least_squares",
        *_PROP1_OVERRIDES[name]])
    measured = dataclasses.replace(measured, name=f"{name}_prop1",
                                   evaluation=dataclasses.replace(measured.evaluation, long_run_steps=100000))
    assert prop1 == measured
