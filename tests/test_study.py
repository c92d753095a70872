"""The study loader: exact error messages at the YAML boundary, defaults, overrides, round trip."""

import dataclasses

import pytest
import yaml

from asymnet.study import (
    MOVED_KEYS,
    AnchorConfig,
    NetworkConfig,
    OperatorConfig,
    Study,
    StudyError,
    WalkbackConfig,
    load_study,
    parse_study,
    replace_in,
    study_to_dict,
)


def error_of(text, overrides=()):
    with pytest.raises(StudyError) as caught:
        parse_study(text, "spiral.yaml", overrides)
    return str(caught.value)


def test_unknown_top_level_key_names_nearest_spelling_and_valid_keys():
    assert error_of("seed: 1\ntrainig:\n  steps: 5\n") == (
        "spiral.yaml:2: unknown key 'trainig'; did you mean 'training'? (valid keys: anchor, data, evaluation, "
        "logging, name, network, operator, replica_sweep, replicas, seed, training, walkback)"
    )


def _keys(section) -> str:
    return ", ".join(sorted(f.name for f in dataclasses.fields(section)))


def test_unknown_nested_key_with_typo_gives_its_line_and_nearest_key():
    text = "name: spiral\nseed: 3\n\noperator:\n  family: gaussian\n  # leak\n  alhpa: 0.3\n"
    assert error_of(text) == (
        "spiral.yaml:7: unknown key 'operator.alhpa'; did you mean 'alpha'? "
        f"(valid keys: {_keys(OperatorConfig)})"
    )


def test_unknown_key_without_close_match_lists_valid_keys_only():
    assert error_of("walkback: {zzz: 1}") == (
        f"spiral.yaml:1: unknown key 'walkback.zzz' (valid keys: {_keys(WalkbackConfig)})"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("training:\n  steps: many\n", "spiral.yaml:2: training.steps = 'many' is not an integer (expected a positive integer)"),
        ("training:\n  steps: true\n", "spiral.yaml:2: training.steps = True is not an integer (expected a positive integer)"),
        ("training:\n  steps: 1.5\n", "spiral.yaml:2: training.steps = 1.5 is not an integer (expected a positive integer)"),
        (
            "training:\n  steps: 2000.0\n",
            "spiral.yaml:2: training.steps = 2000.0 is not an integer (write 2000, without a decimal point; "
            "expected a positive integer)",
        ),
        (
            "seed: 1\nnetwork: [1, 2]\n",
            f"spiral.yaml:2: network = [1, 2] is not a section (expected a mapping of keys: {_keys(NetworkConfig)})",
        ),
        ("data: {binarize: 1}", "spiral.yaml:1: data.binarize = 1 is not a boolean (expected true or false)"),
        ("name: 5", "spiral.yaml:1: name = 5 is not a string"),
        (
            "operator: {sigma: wide}",
            "spiral.yaml:1: operator.sigma = 'wide' is not a finite number (expected a number with sigma > 0)",
        ),
    ],
)
def test_wrong_type_names_key_line_value_and_expectation(text, message):
    assert error_of(text) == message


@pytest.mark.parametrize("alpha", ["0", "1.5", "-0.1"])
def test_alpha_outside_unit_open_closed_interval_is_rejected(alpha):
    assert error_of(f"operator:\n  family: gaussian\n  alpha: {alpha}\n") == (
        f"spiral.yaml:3: operator.alpha = {alpha} is out of range (allowed: 0 < alpha <= 1)"
    )


def test_alpha_of_exactly_one_is_allowed():
    assert parse_study("operator: {alpha: 1}").operator.alpha == 1.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("data: {n_train: -5}", "spiral.yaml:1: data.n_train = -5 is out of range (allowed: n_train > 0)"),
        ("training: {batch_size: 0}", "spiral.yaml:1: training.batch_size = 0 is out of range (allowed: batch_size > 0)"),
        ("network: {n_hidden: -1}", "spiral.yaml:1: network.n_hidden = -1 is out of range (allowed: n_hidden >= 0)"),
        ("walkback: {step_weight_power: -0.5}",
         "spiral.yaml:1: walkback.step_weight_power = -0.5 is out of range (allowed: step_weight_power >= 0)"),
        ("anchor: {start_noise: -0.1}",
         "spiral.yaml:1: anchor.start_noise = -0.1 is out of range (allowed: start_noise >= 0)"),
        ("anchor: {start_noise_fraction: 0}",
         "spiral.yaml:1: anchor.start_noise_fraction = 0 is out of range (allowed: 0 < start_noise_fraction <= 1)"),
        ("anchor: {weight: -1}",
         "spiral.yaml:1: anchor.weight = -1 is out of range (allowed: weight >= 0)"),
    ],
)
def test_negative_or_zero_sizes_are_out_of_range(text, message):
    assert error_of(text) == message


def test_start_noise_with_the_bernoulli_operator_is_refused():
    assert error_of("operator: {family: bernoulli}\nanchor: {start_noise: 0.2}\n") == (
        "spiral.yaml:2: anchor.start_noise = 0.2 adds Gaussian noise to the start of each trajectory, but the "
        "Bernoulli operator's states are binary; set anchor.start_noise: 0 or operator.family: gaussian")


@pytest.mark.parametrize(
    "text, message",
    [
        ("operator: {family: bernoulli}\nanchor: {weight: 1}\n",
         "spiral.yaml:2: anchor.weight = 1 anchors the Gaussian operator's mean to the data's Langevin step, "
         "but operator.family is bernoulli; set anchor.weight: 0 or operator.family: gaussian"),
        ("network: {kind: mlp}\nanchor: {weight: 1}\n",
         "spiral.yaml:2: anchor.weight = 1 needs network.kind: recurrent (its noise level is one per unit, "
         "which sets the anchor's smoothing), got network.kind: mlp; set anchor.weight: 0"),
        ("network: {hidden_units: slow, n_hidden: 8}\nanchor: {weight: 1}\n",
         "spiral.yaml:2: anchor.weight = 1 needs a chain whose state is the visible units, but "
         "network.hidden_units is slow with n_hidden = 8 (the anchor has no target for hidden units); set "
         "network.hidden_units: fast or anchor.weight: 0"),
        ("network: {hidden_units: fast}\nanchor: {weight: 1, noise: 0}\n",
         "spiral.yaml:2: anchor.noise = 0 leaves the anchor no noise to denoise; give the widest "
         "smoothing in data units (e.g. the distance between modes), or set anchor.weight: 0"),
        ("network: {hidden_units: fast}\ndata: {name: mnist}\nanchor: {weight: 1, bandwidth: 0.1}\n",
         "spiral.yaml:3: anchor.bandwidth = 0.1 needs a 2-D toy dataset (a kernel density of mnist "
         "images is not a density model), got data.name: mnist; set anchor.bandwidth: 0"),
        ("network: {hidden_units: fast}\nanchor: {weight: 1, wide: 0.5}\n",
         "spiral.yaml:2: anchor.wide = 0.5 moves anchor starts away from the data, where only the "
         "kernel density's step gives them a target; set anchor.bandwidth (e.g. 0.07) or "
         "anchor.wide: 0"),
    ],
)
def test_score_anchor_outside_its_reach_is_refused(text, message):
    assert error_of(text) == message


def test_replicas_take_the_anchor_and_the_noisy_starts():
    study = parse_study("replicas: 2\nnetwork: {hidden_units: fast}\nanchor: {weight: 1, start_noise: 0.3}\n"
                        "walkback: {step_weight_power: 0.5}\ntraining: {learning: autograd}\n", "spiral.yaml")
    assert (study.replicas, study.anchor.weight, study.anchor.start_noise) == (2, 1.0, 0.3)


@pytest.mark.parametrize("old, new", list(MOVED_KEYS.items()))
def test_a_key_that_moved_to_the_anchor_section_names_its_new_place(old, new):
    section, key = old.split(".")
    assert error_of(f"{section}:\n  {key}: 0.5\n") == (
        f"spiral.yaml:2: '{old}' has moved: write it as '{new}' (section anchor:)")
    assert error_of("", overrides=[f"{old}=0.5"]) == (
        f"--set {old}=0.5: '{old}' has moved: write it as '{new}' (section anchor:)")


def test_a_run_log_written_with_the_old_anchor_keys_reads_them_at_their_new_place():
    text = ("network: {hidden_units: fast}\nwalkback: {n_extra_max: 3, start_noise: 0.3, start_noise_fraction: 0.2, "
            "score_anchor: 64.0, score_anchor_bandwidth: 0.035, score_anchor_wide: 0.5, score_anchor_noise: 0.4, "
            "score_anchor_wide_noise: 0.2}\n")
    study = parse_study(text, "log.h5", from_log=True)
    assert study.walkback.n_extra_max == 3
    assert study.anchor == AnchorConfig(start_noise=0.3, start_noise_fraction=0.2, weight=64.0, noise=0.4,
                                        bandwidth=0.035, wide=0.5, wide_noise=0.2)
    with pytest.raises(StudyError, match="has moved"):  # a study file is told, not silently moved
        parse_study(text, "spiral.yaml")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_study_file_is_refused_naming_the_fix(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(StudyError) as caught:
        load_study(path)
    assert str(caught.value) == (
        f"{path}: the study file is empty (no keys), so every key would take its default; write the study's keys "
        "(copy studies/spiral.yaml to start; every key and its default: docs/study_keys.md)")


def test_score_anchor_with_fast_hidden_units_or_none_is_accepted():
    assert parse_study("network: {hidden_units: fast}\nanchor: {weight: 2}").anchor.weight == 2.0
    assert parse_study("network: {n_hidden: 0}\nanchor: {weight: 1}").anchor.noise == 0.5


def test_bad_choice_lists_allowed_strings():
    assert error_of("operator:\n  noise_scaling: sqrtT\n") == (
        "spiral.yaml:2: operator.noise_scaling = 'sqrtT' is not one of: sqrt_T, T"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("- 1\n- 2\n", "spiral.yaml:1: a study must be a mapping of keys (e.g. 'training:' with 'steps: 2000' under it), not a list"),
        ("seed: 1\ntraining: [\n", "spiral.yaml:3: not valid YAML: expected the node content, but found '<stream end>'"),
        ("seed: 1\nseed: 2\n", "spiral.yaml:2: duplicate key 'seed' (first given on line 1)"),
    ],
)
def test_malformed_file_is_one_error_with_its_line(text, message):
    assert error_of(text) == message


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.steps", "--set training.steps: expected key=value, e.g. --set training.steps=50"),
        (
            "training.stepz=3",
            "--set training.stepz=3: unknown key 'training.stepz'; did you mean 'steps'? "
            "(valid keys: autocast, batch_size, dtype, learning, learning_rate, lr_schedule, ls_damping, ls_memory, "
            "ls_step, optimizer, steps)",
        ),
        (
            "trainig.steps=3",
            "--set trainig.steps=3: unknown key 'trainig'; did you mean 'training'? (valid keys: anchor, data, "
            "evaluation, logging, name, network, operator, replica_sweep, replicas, seed, training, walkback)",
        ),
        ("training.steps=many", "--set training.steps=many: training.steps = 'many' is not an integer (expected a positive integer)"),
        ("training.steps.x=1", "--set training.steps.x=1: training.steps is a value, not a section, so 'training.steps.x' names nothing"),
    ],
)
def test_bad_override_is_named_in_the_error(override, message):
    assert error_of("seed: 1", [override]) == message


def test_good_overrides_are_applied_over_the_file_and_parse_floats_from_text():
    study = parse_study(
        "training:\n  steps: 10\n  learning_rate: 1e-3\n",
        overrides=["training.steps=50", "training.batch_size=32", "operator={alpha: 0.25}"],
    )
    assert study.training.steps == 50 and type(study.training.steps) is int
    assert study.training.batch_size == 32
    assert study.training.learning_rate == 1e-3 and type(study.training.learning_rate) is float
    assert study.operator == OperatorConfig(alpha=0.25)
    assert parse_study("", overrides=["training.learning_rate=1e-4"]).training.learning_rate == 1e-4


def test_missing_keys_take_defaults_and_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "spiral.yaml"
    path.write_text("seed: 7\n")
    study, text = load_study(path)
    assert text == "seed: 7\n"
    assert study == dataclasses.replace(Study(), name="spiral", seed=7)
    assert parse_study("") == Study()
    assert parse_study("name: run1", "spiral.yaml").name == "run1"


def test_loaded_text_records_overrides_as_comments(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("seed: 7")
    study, text = load_study(path, ["training.steps=50", "seed=2"])
    assert study.seed == 2 and study.training.steps == 50
    assert text == "seed: 7\n# overrides given with --set:\n# --set training.steps=50\n# --set seed=2\n"
    assert yaml.safe_load(text) == {"seed": 7}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(StudyError, match=r"^no study file at .*nowhere\.yaml$"):
        load_study(tmp_path / "nowhere.yaml")


def test_study_is_frozen():
    study = Study()
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.seed = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.operator.alpha = 0.9


def test_replace_in_validates_like_the_file():
    study = replace_in(Study(), "operator.alpha", 1)
    assert study.operator.alpha == 1.0 and Study().operator.alpha == 0.5
    assert replace_in(study, "training", {"steps": 9}).training.steps == 9
    with pytest.raises(StudyError, match=r"^operator\.alpha = 0 is out of range \(allowed: 0 < alpha <= 1\)$"):
        replace_in(study, "operator.alpha", 0)


def test_round_trip_through_plain_dict_and_yaml():
    study = parse_study("name: r\nseed: 4\noperator: {alpha: 0.3, family: bernoulli}\ntraining: {learning_rate: 2.5e-5}\n")
    as_dict = study_to_dict(study)
    assert as_dict["operator"]["family"] == "bernoulli" and isinstance(as_dict["training"], dict)
    assert parse_study(yaml.safe_dump(as_dict)) == study


def test_the_study_names_the_same_toys_the_data_package_has():
    from asymnet.data.toy import TOYS
    from asymnet.study import TOY_DATASETS

    assert TOY_DATASETS == tuple(TOYS)


def test_the_study_key_reference_in_docs_is_up_to_date():
    from pathlib import Path

    from asymnet.study import key_reference

    reference = key_reference()
    for section in ("data", "network", "operator", "walkback", "anchor", "training", "logging", "evaluation"):
        assert f"## `{section}:`" in reference
    assert "| `anchor.weight` | float | `0.0` | >= 0 |" in reference
    assert "| `training.learning` | str | `\"autograd\"` | autograd, local |" in reference
    path = Path(__file__).resolve().parents[1] / "docs" / "study_keys.md"
    assert path.read_text() == reference, "docs/study_keys.md is out of date: python -m asymnet.study > docs/study_keys.md"


def test_hidden_learning_and_feedback_default_to_a_fixed_expansion_and_the_exact_feedback():
    network = parse_study("seed: 1\n").network
    assert (network.hidden_learning, network.feedback, network.feedback_scale, network.feedback_decay) == (
        "fixed", "transpose", 1.0, 1.0e-3)
    study = parse_study("network: {hidden_units: fast, hidden_learning: learned, feedback: kolen_pollack, "
                        "feedback_scale: 0.5, feedback_decay: 0.01}\ntraining: {learning: local}\nreplicas: 2\n")
    assert (study.network.feedback, study.network.feedback_scale, study.network.feedback_decay) == (
        "kolen_pollack", 0.5, 0.01)
    assert parse_study("network: {hidden_units: fast, hidden_learning: learned}\n").network.hidden_learning == "learned"


FAST_LEARNED = "network: {hidden_units: fast, hidden_learning: learned"


@pytest.mark.parametrize(
    "text, message",
    [
        ("network: {hidden_learning: learned}\n",
         "spiral.yaml:1: network.hidden_learning = learned needs fast hidden units (slow ones are part of the "
         "chain's state and learn their own loss only); set network.hidden_units: fast or network.hidden_learning: "
         "fixed"),
        ("network: {kind: mlp, hidden_learning: learned}\n",
         "spiral.yaml:1: network.hidden_learning = learned trains the fast hidden units of the recurrent network, "
         "got network.kind: mlp; set network.hidden_learning: fixed"),
        (FAST_LEARNED + ", n_hidden: 0}\n",
         "spiral.yaml:1: network.hidden_learning = learned has no hidden units to train (network.n_hidden = 0); "
         "set network.n_hidden (e.g. 64) or network.hidden_learning: fixed"),
        (FAST_LEARNED + "}\ntraining: {optimizer: least_squares}\n",
         "spiral.yaml:1: network.hidden_learning = learned needs training.optimizer: adam (the least-squares step "
         "fits the visible units' readout only); set training.optimizer: adam or network.hidden_learning: fixed"),
        ("network: {hidden_units: fast, feedback: random}\ntraining: {learning: local}\n",
         "spiral.yaml:1: network.feedback = random carries the visible errors to learned hidden units, but "
         "network.hidden_learning is fixed and there is no network.conv_channels pathway; set "
         "network.hidden_learning: learned (with network.hidden_units: fast), or network.feedback: transpose"),
        (FAST_LEARNED + ", feedback: kolen_pollack}\n",
         "spiral.yaml:1: network.feedback = kolen_pollack is a choice of the local rule; training.learning: "
         "autograd follows the exact gradient (B = W_vh^T); set training.learning: local or network.feedback: "
         "transpose"),
        (FAST_LEARNED + ", feedback_scale: 0.5}\ntraining: {learning: local}\n",
         "spiral.yaml:1: network.feedback_scale = 0.5 sets the start of a feedback matrix of its own, but "
         "network.feedback is transpose (B = W_vh^T); set network.feedback: random or kolen_pollack, or drop "
         "network.feedback_scale"),
        (FAST_LEARNED + ", feedback: random,\n  feedback_decay: 0.01}\ntraining: {learning: local}\n",
         "spiral.yaml:2: network.feedback_decay = 0.01 acts under network.feedback: kolen_pollack only, got "
         "network.feedback: random; set network.feedback: kolen_pollack or drop network.feedback_decay"),
        ("network: {feedback_decay: 1}\n",
         "spiral.yaml:1: network.feedback_decay = 1 is out of range (allowed: 0 <= feedback_decay < 1)"),
        ("network: {feedback: exact}\n",
         "spiral.yaml:1: network.feedback = 'exact' is not one of: transpose, random, kolen_pollack"),
    ],
)
def test_hidden_learning_and_feedback_keys_where_they_would_be_ignored_are_refused(text, message):
    assert error_of(text) == message
