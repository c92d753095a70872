"""Data-parallel training (asymnet.distributed): two gloo processes on the CPU take the step that one
process takes on the same global batch, and a run resumes under a different number of processes."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from asymnet import run as run_module
from asymnet.distributed import DistributedError, Shard
from asymnet.runlog import read_metric, read_summary
from asymnet.study import parse_study
from tests.conftest import REPO, TINY_STUDY, run_main
from asymnet.model import build_model, load_data

STEP_STUDIES = {
    # autograd through an MLP that reads log T
    "mlp_autograd": """
seed: 5
data: {name: spiral, n_train: 500, n_test: 50}
network: {kind: mlp, mlp_width: 16, mlp_depth: 2}
operator: {alpha: 0.5, sigma: 0.1}
walkback: {n_extra_max: 2}
training: {batch_size: 12, learning_rate: 1.0e-2, learning: autograd, dtype: float64}
""",
    # the local STDP rule with slow hidden units (their settling draws noise too)
    "recurrent_local": """
seed: 6
data: {name: spiral, n_train: 500, n_test: 50}
network: {kind: recurrent, n_hidden: 5}
operator: {alpha: 0.5, sigma: 0.1}
walkback: {n_extra_max: 2, settle_steps: 3}
training: {batch_size: 12, learning_rate: 1.0e-2, learning: local, dtype: float64}
""",
}
TOLERANCE = 1e-12  # float64: the two processes' batch means are averaged, so only the summation order differs


def _one_step(study_text: str, shard: Shard) -> dict[str, torch.Tensor]:
    study = parse_study(study_text)
    data = load_data(study, None)
    model = build_model(study, data, torch.device("cpu"), torch.float64, shard)
    run_module.train_step(model, study, data, torch.device("cpu"), torch.float64, with_terms=True)
    result = {f"grad/{name}": p.grad.clone() for name, p in model.network.named_parameters() if p.grad is not None}
    result.update({f"weight/{name}": p.detach().clone() for name, p in model.network.named_parameters()})
    result.update({f"p_star/{name}": value.clone() for name, value in model.p_star.state_dict().items()})
    result["generator"] = model.generator.get_state()
    return result


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        for name, study_text in STEP_STUDIES.items():
            torch.save(_one_step(study_text, Shard(rank, world_size)), os.path.join(out_dir, f"{name}_rank{rank}.pt"))
        dist.barrier()  # neither rank tears gloo down while the other may still use it (a teardown race aborted one)
    finally:
        dist.destroy_process_group()
    # a rank whose files are written leaves without the interpreter's teardown, in which gloo's threads
    # could still abort the process ("terminate called without an active exception", about 1 run in 4)
    os._exit(0)


def test_two_gloo_processes_take_the_single_process_step(tmp_path):
    # one pair of processes takes the step of every study: each start re-imports torch and asymnet
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for name, study_text in STEP_STUDIES.items():
        single = _one_step(study_text, Shard())
        assert any(key.startswith("grad/") for key in single)
        for rank in range(2):
            sharded = torch.load(tmp_path / f"{name}_rank{rank}.pt", weights_only=True)
            assert sharded.keys() == single.keys()
            assert torch.equal(sharded["generator"], single["generator"]), name  # one random stream for every rank
            for key, value in single.items():
                if key == "generator":
                    continue
                scale = value.abs().max().clamp_min(1e-30)
                error = ((sharded[key] - value).abs().max() / scale).item()
                assert error < TOLERANCE, (name, key, error)
            assert not torch.equal(sharded["weight/" + next(k[5:] for k in single if k.startswith("grad/"))],
                                   _initial_weight(study_text)), name  # the step moved the weights


def _initial_weight(study_text: str) -> torch.Tensor:
    study = parse_study(study_text)
    data = load_data(study, None)
    model = build_model(study, data, torch.device("cpu"), torch.float64)
    name = next(name for name, p in model.network.named_parameters() if p.requires_grad)
    return dict(model.network.named_parameters())[name].detach()


def test_a_shard_takes_its_rows_and_refuses_a_batch_that_does_not_split():
    batch = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(Shard(1, 3).take(batch), batch[2:4])
    assert Shard().take(batch) is batch and Shard().draw("normal", (6, 2), None, torch.float64, "cpu") is None
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(Shard(1, 2).draw("normal", (3, 2), gen_a, torch.float64, "cpu"),
                       torch.randn((6, 2), generator=gen_b, dtype=torch.float64)[3:])
    with pytest.raises(DistributedError, match="a global batch of 10 does not split over 3 processes; make "
                                               "training.batch_size a multiple of the number of processes"):
        Shard(0, 3).take(torch.zeros(10))


def _torchrun(*args, nproc=2, **kwargs):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "asymnet.run", *map(str, args), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, **kwargs)


def _kill_every_process_naming(folder: Path, timeout: float = 60.0) -> None:
    """SIGKILL every process whose command line names ``folder`` and wait until none is left, so that no
    killed run's worker can still write there once the test resumes the run."""
    import time

    deadline = time.time() + timeout
    while True:
        alive = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
                state = next((line for line in (entry / "status").read_text().splitlines()
                              if line.startswith("State:")), "")
            except OSError:
                continue
            if str(folder).encode() in command and "Z" not in state.split(":")[-1][:3]:
                alive.append(int(entry.name))
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not alive:
            return
        assert time.time() < deadline, f"the killed run's processes {alive} are still running"
        time.sleep(0.05)


def test_torchrun_run_killed_then_resumed_in_one_process_ends_at_the_single_process_weights(tmp_path, capsys):
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY_STUDY.replace("steps: 60", "steps: 80").replace(
        "learning: local}", "learning: local, dtype: float64, lr_schedule: cosine}"))  # every rank on the schedule
    process = _torchrun(study, "--out", tmp_path / "two")
    log_path = tmp_path / "two" / "log.h5"
    import time

    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        try:
            if len(read_metric(log_path, "loss")[0]) >= 5:  # past the checkpoints at steps 10 and 20
                break
        except Exception:
            pass
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    _kill_every_process_naming(tmp_path / "two")  # a worker may sit in a session of its own: kill -9 the whole job
    assert read_summary(tmp_path / "two").status == "running"
    assert read_summary(tmp_path / "two").attrs["world_size"] == 2
    resumed = run_main(capsys, "--resume", tmp_path / "two", "--quiet")  # this process: one, unlaunched
    assert resumed.returncode == 0, resumed.stderr
    straight = run_main(capsys, study, "--out", tmp_path / "one", "--quiet")
    assert straight.returncode == 0, straight.stderr
    a = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 80
    for name, value in b["network"].items():
        error = ((a["network"][name] - value).abs().max() / value.abs().max().clamp_min(1e-30)).item()
        assert error < 1e-9, (name, error)  # 80 steps of round-off differences, in float64
    assert read_summary(tmp_path / "two").status == "finished"


def test_torchrun_refuses_a_batch_that_does_not_split_over_its_processes(tmp_path):
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY_STUDY.replace("batch_size: 32", "batch_size: 33"))
    process = _torchrun(study, "--out", tmp_path / "bad")
    _, stderr = process.communicate(timeout=240)
    assert process.returncode != 0
    assert "a global batch of 33 does not split over 2 processes" in stderr.decode()
    assert not (tmp_path / "bad").exists()
