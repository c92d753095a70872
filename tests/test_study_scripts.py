"""The record scripts of studies/mnist_stdp read their positional arguments through one helper: a missing,
extra or mistyped argument, or a run directory that is not there, is one line and exit status 2, found
before any run is loaded."""

import importlib

import pytest

from asymnet.errors import AsymnetError, RunError
from studies.mnist_stdp import (UsageError, nonnegative_int, number_text, positional, positive_int,
                                run_script)

USAGE = "python -m studies.mnist_stdp.chain_noise RUN_DIR [STEPS [CHAINS [C,C,...]]]"
SPECS = (("RUN_DIR", str), ("STEPS", positive_int, 1_000), ("CHAINS", positive_int, 50), ("C,C,...", str, "0,1"))
SCRIPTS = ("chain_contrast", "chain_noise", "chain_targets", "class_balance", "cold_model_heating", "contraction", "copies", "corrector", "heated_chain",
           "langevin_chain", "linear_reference", "marginals", "overfit", "regenerate", "restart_chain", "reverse_noise",
           "slope_hinge", "slow_noise", "weight_from")


def one_line(capsys, prog: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert captured.out == ""
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0][len(f"{prog}: error: "):]


def no_run(*args, **kwargs):
    raise AssertionError("a bad command line loaded a run")


def test_good_values_and_defaults():
    assert positional(["runs/m8"], USAGE, *SPECS) == ["runs/m8", 1_000, 50, "0,1"]
    assert positional(["runs/m8", "30", "7", "0.5"], USAGE, *SPECS) == ["runs/m8", 30, 7, "0.5"]
    assert positional(["r", "-1.5", "0"], "u", ("RUN_DIR", str), ("T", float), ("ROUNDS", nonnegative_int)) == \
        ["r", -1.5, 0]
    assert positional([], "u", ("RUN_DIR", str, None)) == [None]
    assert positional(["r", "2", "1e3"], "u", ("RUN_DIR", str), ("T ...", number_text)) == ["r", ["2", "1e3"]]
    assert positional(["2"], "u", ("T0", float), ("ARGUMENTS ...", str, [])) == [2.0, []]
    assert positional(["2", "s.yaml", "--out", "x"], "u", ("T0", float), ("ARGUMENTS ...", str, [])) == \
        [2.0, ["s.yaml", "--out", "x"]]


@pytest.mark.parametrize("argv, message", [
    ([], "missing RUN_DIR"),
    (["runs/m8", "abc"], "STEPS must be a positive integer, got 'abc'"),
    (["runs/m8", "2.5"], "STEPS must be a positive integer, got '2.5'"),
    (["runs/m8", "10", "0"], "CHAINS must be a positive integer, got '0'"),
    (["runs/m8", "10", "-3"], "CHAINS must be a positive integer, got '-3'"),
    (["runs/m8", "10", "5", "0,1", "extra"], "too many arguments: 'extra' after C,C,..."),
    (["runs/m8", "10", "5", "0,1", "a", "b"], "too many arguments: 'a b' after C,C,..."),
])
def test_bad_command_lines_raise_one_message(argv, message):
    with pytest.raises(UsageError) as caught:
        positional(argv, USAGE, *SPECS)
    assert str(caught.value) == f"{message}; usage: {USAGE}"
    assert isinstance(caught.value, AsymnetError) and caught.value.exit_status == 2


@pytest.mark.parametrize("argv, specs, message", [
    (["r", "x"], (("RUN_DIR", str), ("T", float)), "T must be a number, got 'x'"),
    (["r", "x"], (("RUN_DIR", str), ("N", int)), "N must be an integer, got 'x'"),
    (["r", "-1"], (("RUN_DIR", str), ("ROUNDS", nonnegative_int)), "ROUNDS must be a non-negative integer, got '-1'"),
    (["r"], (("RUN_DIR", str), ("T ...", number_text)), "missing T"),
    (["r", "2", "hot"], (("RUN_DIR", str), ("T ...", number_text)), "T must be a number, got 'hot'"),
])
def test_other_kinds_and_lists(argv, specs, message):
    with pytest.raises(UsageError) as caught:
        positional(argv, "u", *specs)
    assert str(caught.value) == f"{message}; usage: u"


def test_run_script_prints_one_line_and_returns_the_status(capsys):
    from studies.mnist_stdp import chain_noise

    assert run_script("studies.mnist_stdp.chain_noise", chain_noise.main, ["runs_exp/m8", "abc"]) == 2
    assert one_line(capsys, "studies.mnist_stdp.chain_noise") == (
        f"STEPS must be a positive integer, got 'abc'; usage: {USAGE}")
    assert run_script("p", lambda argv: None, []) == 0
    assert run_script("p", lambda argv: len(argv), ["a", "b", "c"]) == 3

    def diverged(argv):
        raise RunError("first line\n  second line")

    assert run_script("p", diverged, []) == 2
    assert one_line(capsys, "p") == "first line second line"


@pytest.mark.parametrize("module, patched, argv, message", [
    ("chain_noise", "heated_chain", ["runs/m8", "1000", "fifty"], "CHAINS must be a positive integer, got 'fifty'"),
    ("chain_noise", "heated_chain", ["runs/m8", "10", "5", "0,x"],
     "C,C,... must be a comma-separated list of numbers or posterior, got '0,x'"),
    ("slope_hinge", "slope_hinge", ["runs/m8", "500", "1e-4"], "missing BETA"),
    ("slope_hinge", "slope_hinge", ["runs/m8", "500", "1e-4", "1", "3", "1", "0"],
     "STEPS must be a positive integer, got '0'"),
    ("chain_contrast", "chain_contrast", ["runs/m8", "1000", "2e-4", "strong"], "BETA must be a number, got 'strong'"),
    ("chain_contrast", "chain_contrast", ["runs/m8", "1000", "2e-4", "1", "0"], "STEPS must be a positive integer, got '0'"),
    ("restart_chain", "heated_chain", ["runs/m8"], "missing T"),
    ("restart_chain", "heated_chain", ["runs/m8", "hot"], "T must be a number, got 'hot'"),
    ("restart_chain", "heated_chain", ["runs/m8", "2", "10", "50", "more"], "too many arguments: 'more' after CHAINS"),
    ("t1_chain", "t1_chain", ["chain", "runs/m8", "100", "model,walk"],
     "VARIANT[,VARIANT...] must be a comma-separated list of model, gsn or langK, got 'model,walk'"),
    ("langevin_chain", "heated_chain", ["runs/m8", "10", "5", "langevin/0"],
     "ARM,ARM,... must be a comma-separated list of operator, langevin, langevin/K, langevin*M or level@T[:F], "
     "got 'langevin/0'"),
])
def test_scripts_check_their_arguments_before_loading_a_run(monkeypatch, module, patched, argv, message):
    script = importlib.import_module(f"studies.mnist_stdp.{module}")
    monkeypatch.setattr(importlib.import_module(f"studies.mnist_stdp.{patched}"), "load_run", no_run)
    with pytest.raises(UsageError) as caught:
        script.main(argv)
    usage = script.USAGES[argv[0]] if module == "t1_chain" else script.USAGE
    assert str(caught.value) == f"{message}; usage: {usage}"


@pytest.mark.parametrize("module, argv", [
    ("chain_noise", ["{missing}"]),
    ("slope_hinge", ["{missing}", "500", "1e-4", "1"]),
    ("restart_chain", ["{missing}", "2"]),
    ("t1_chain", ["steps", "{missing}"]),
])
def test_a_missing_run_directory_is_one_line(tmp_path, capsys, module, argv):
    script = importlib.import_module(f"studies.mnist_stdp.{module}")
    missing = tmp_path / "nowhere"
    prog = f"studies.mnist_stdp.{module}"
    assert run_script(prog, script.main, [a.format(missing=missing) for a in argv]) == 2
    assert one_line(capsys, prog).startswith(f"{missing} is not a directory; give the run directory")


@pytest.mark.parametrize("module", SCRIPTS)
def test_each_usage_line_is_the_one_its_docstring_gives(module):
    script = importlib.import_module(f"studies.mnist_stdp.{module}")
    assert f"\n    {script.USAGE}\n" in script.__doc__


def test_t1_chain_names_its_command_first():
    from studies.mnist_stdp import t1_chain

    for usage in t1_chain.USAGES.values():
        assert f"\n    {usage}\n" in t1_chain.__doc__
    with pytest.raises(UsageError, match=r"^COMMAND must be chain, finetune or steps, got 'sample'; usage: "
                                         r"python -m studies\.mnist_stdp\.t1_chain chain .* or .* finetune .* or "
                                         r".* steps RUN_DIR \[RUN_DIR \.\.\.\]$"):
        t1_chain.main(["sample", "runs/m8"])
    with pytest.raises(UsageError, match=r"^missing COMMAND; usage: "):
        t1_chain.main([])
