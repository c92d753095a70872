"""Bad input reaches the user as one line and exit status 2, from every command, and leaves what was
there as it was: an empty study file, a checkpoint that is not an asymnet checkpoint, an IDX file with the
wrong magic number, a key that moved."""

import contextlib
import gzip
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from asymnet import inpaint, measure, run, sample
from asymnet.cli import run_command
from asymnet.errors import AsymnetError, RunError, TrainingDiverged
from asymnet.runlog import LOG_NAME, read_summary
from tests.conftest import TINY_STUDY, copy_run

# the mixture, not the spiral (see tests.conftest.TINY_STUDY): the end-of-run figure draws the data density
def one_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0][len(f"{prog}: error: "):]


def test_every_error_a_user_can_cause_derives_from_one_base():
    from asymnet.brian import BrianExportError
    from asymnet.data import DataError
    from asymnet.distributed import DistributedError
    from asymnet.metrics.stationary import GridError
    from asymnet.plasticity import PlasticityError
    from asymnet.readout import LeastSquaresError
    from asymnet.runlog import LogError
    from asymnet.study import StudyError

    for error in (StudyError, DataError, LogError, RunError, PlasticityError, DistributedError, LeastSquaresError,
                  GridError, BrianExportError, TrainingDiverged):
        assert issubclass(error, AsymnetError), error
    assert AsymnetError.exit_status == 2 and TrainingDiverged.exit_status == 1


def test_the_handler_folds_a_message_into_one_line_and_returns_its_status(capsys):
    def fail():
        raise RunError("first line\n  second line")

    assert run_command("asymnet.x", fail) == 2
    assert one_line(capsys, "asymnet.x") == "first line second line"
    assert run_command("asymnet.x", lambda: {"figure": 0.5}) == 0
    assert capsys.readouterr().out == "figure  0.5\n"


def test_a_reader_that_goes_away_ends_the_command_quietly():
    # `python -m asymnet.inspect RUN | head -1`: the pipe closes while the command still prints
    code = ("import sys; from asymnet.cli import run_command; "
            "sys.exit(run_command('asymnet.x', lambda: {f'figure{k}': k for k in range(200_000)}))")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.readline() == b"figure0  0\n"
    child.stdout.close()
    assert child.wait(timeout=60) == 141
    assert child.stderr.read() == b""


@pytest.mark.parametrize("text", ["", "# a study still to write\n"])
def test_an_empty_study_file_is_one_line_and_writes_nothing(tmp_path, capsys, text):
    study = tmp_path / "empty.yaml"
    study.write_text(text)
    assert run.main([str(study), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert one_line(capsys, "asymnet.run") == (
        f"{study}: the study file is empty (no keys), so every key would take its default; write the study's keys "
        "(copy studies/spiral.yaml to start; every key and its default: docs/study_keys.md)")
    assert not (tmp_path / "run").exists()


def test_a_moved_key_on_the_command_line_names_its_new_place(tmp_path, capsys):
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY_STUDY)
    assert run.main([str(study), "--out", str(tmp_path / "run"), "--set", "walkback.score_anchor=2", "--quiet"]) == 2
    assert one_line(capsys, "asymnet.run") == (
        "--set walkback.score_anchor=2: 'walkback.score_anchor' has moved: write it as 'anchor.weight' (section anchor:)")


class NotTensors:
    """Something torch.save pickles as a Python object, which a tensors-only load refuses."""


@pytest.mark.parametrize("command, content, problem", [
    ("sample", "object", "cannot be read as tensors only"),
    ("measure", "object", "cannot be read as tensors only"),
    ("inpaint", "object", "cannot be read as tensors only"),
    ("resume", "object", "cannot be read as tensors only"),
    ("sample", "garbage", "cannot be read as tensors only"),
    ("sample", "foreign", "lacks step, network, optimizer, p_star, generator"),
])
def test_a_checkpoint_that_is_not_ours_is_refused_in_one_line_and_kept(tiny_run, tmp_path, capsys, command,
                                                                        content, problem):
    folder = copy_run(tiny_run, tmp_path / "run")
    checkpoint = folder / "checkpoint.pt"
    if content == "object":
        torch.save({"step": 4, "network": NotTensors()}, checkpoint)
    elif content == "garbage":
        checkpoint.write_bytes(pickle.dumps([1, 2, 3])[:5] + b"\x00 not a zip archive")
    else:
        torch.save({"weights": torch.zeros(3)}, checkpoint)
    before = checkpoint.read_bytes()
    mains = {"sample": lambda: sample.main([str(folder), "--steps", "10", "--quiet"]),
             "measure": lambda: measure.main([str(folder), "--quiet"]),
             "inpaint": lambda: inpaint.main([str(folder), "--quiet"]),
             "resume": lambda: run.main(["--resume", str(folder), "--quiet"])}
    with _no_warning():
        assert mains[command]() == 2
    message = one_line(capsys, "asymnet.run" if command == "resume" else f"asymnet.{command}")
    assert message.startswith(f"not an asymnet checkpoint: {checkpoint} ") and problem in message, message
    assert checkpoint.read_bytes() == before  # the file the user pointed at is left as it was
    assert read_summary(folder).status == "finished"


@contextlib.contextmanager
def _no_warning():
    """A context in which any warning fails the test: the user would read it as a second line. ResourceWarning
    is left out: Python's default filters never show it, and the garbage collector may report a file another
    test left open while this one runs."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ResourceWarning)
        yield
    assert not [str(w.message) for w in records]


def test_a_checkpoint_of_another_study_is_refused_in_one_line(tiny_run, tmp_path, capsys):
    folder = copy_run(tiny_run, tmp_path / "run")
    from asymnet.model import build_model, load_data, save_checkpoint
    from asymnet.study import parse_study

    other = parse_study(TINY_STUDY.replace("n_hidden: 6", "n_hidden: 7"))
    save_checkpoint(folder / "checkpoint.pt", build_model(other, load_data(other, None), torch.device("cpu"),
                                                          torch.float32), 4)
    assert sample.main([str(folder), "--steps", "10", "--quiet"]) == 2
    message = one_line(capsys, "asymnet.sample")
    assert message.startswith(f"{folder / 'checkpoint.pt'} does not fit the study in its log (") and \
        message.endswith("it belongs to another run: restore that run's checkpoint.pt, or start the run again"), message


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_an_mnist_file_with_the_wrong_magic_number_is_named_with_the_expected_one(tmp_path, capsys):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    images, labels = np.zeros((10, 28, 28), np.uint8), np.arange(10, dtype=np.uint8)
    for split in ("train", "t10k"):
        # the labels file under the images file's name: a swapped download
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(labels, 0x00000801)))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels, 0x00000801)))
    study = tmp_path / "mnist.yaml"
    study.write_text("data: {name: mnist, n_train: 10, n_test: 10}\ntraining: {steps: 2}\n")
    assert run.main([str(study), "--out", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--quiet"]) == 2
    assert one_line(capsys, "asymnet.run") == (
        f"{folder / 'train-images-idx3-ubyte.gz'}: wrong magic number 0x00000801, expected 0x00000803 (type code "
        "0x08, 3 dimensions); the file is not the one its name says: replace it with the original MNIST file")
    assert not (tmp_path / "run" / LOG_NAME).exists()
    del images


def test_a_classifier_file_that_is_not_its_weights_is_named_with_the_fix(tmp_path):
    from asymnet.classifier import load_classifier
    from asymnet.data import DataError

    path = tmp_path / "mnist_classifier.pt"
    torch.save({"conv.weight": torch.zeros(2)}, path)
    with pytest.raises(DataError) as caught:
        load_classifier(tmp_path)
    assert str(caught.value).startswith(f"{path}: not the MNIST classifier's weights (")
    assert str(caught.value).endswith(f"delete it and train one with: python -m asymnet.classifier --out {path}")
