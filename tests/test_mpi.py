"""Data-parallel training for real: `mpiexec -n 2` on tiny configs, against a plain run.

Skipped (with the reason) where mpiexec or mpi4py is missing; CI installs the mpi extra, so
there they run."""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from charrnn_cli.io import checkpoint as ckpt
from charrnn_cli.parallel.dist import Single, launcher_size, split
from charrnn_cli.training.runfolder import read_metrics

from conftest import make_config, write_yaml, wait_for_lines


# the mpich wheel's mpiexec sits beside this Python: found without activating the venv
_BESIDE = os.path.join(os.path.dirname(sys.executable), "mpiexec")
MPIEXEC = _BESIDE if os.access(_BESIDE, os.X_OK) else shutil.which("mpiexec")
HAVE_MPI = MPIEXEC is not None and importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs mpiexec and mpi4py: pip install \".[mpi]\"")
HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCHER_VARS = ("PMI_", "OMPI_", "MV2_", "SLURM_", "PMIX_", "HYDRA_", "MPI_")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARS)}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **extra)  # two processes on two cores
    return env


def charrnn(*args, n=None, timeout=180):
    cmd = ([MPIEXEC, "-n", str(n)] if n else []) + [sys.executable, "-m", "charrnn_cli"] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env())


def tiny(tmp_path, name="run", **training):
    raw = make_config(tmp_path, **dict(dict(max_steps=30, eval_every=10, checkpoint_every=10, log_every=5), **training))
    raw["output"]["dir"] = str(tmp_path / name)
    return raw


def params(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith(("rnn.", "decoder.", "state."))}


def val_losses(run_dir):
    return [r["val_loss"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if r["val_loss"] is not None]


# ---- without mpiexec ------------------------------------------------------------------------


def test_the_environment_says_how_many_processes_were_launched():
    assert launcher_size({}) == 1
    assert launcher_size({"PMI_SIZE": "4", "PMI_RANK": "1"}) == 4
    assert launcher_size({"OMPI_COMM_WORLD_SIZE": "8"}) == 8
    assert launcher_size({"SLURM_NTASKS": "4"}) == 1  # inside an allocation, but not started by srun
    assert launcher_size({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2"}) == 2
    assert [split(10, 4, r) for r in range(4)] == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert Single().block(8) == (0, 8)


def test_a_plain_run_never_imports_mpi4py(tmp_path):
    cfg = write_yaml(tmp_path, tiny(tmp_path, max_steps=2))
    code = ("import sys; from charrnn_cli.cli import main\n"
            "try:\n    main(['train', sys.argv[1], '--quiet'])\nexcept SystemExit as e:\n    assert not e.code\n"
            "print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, env=clean_env())
    assert out.stdout.strip().splitlines()[-1] == "False", out


def test_under_a_launcher_without_mpi4py_one_line(tmp_path):
    cfg = write_yaml(tmp_path, tiny(tmp_path))
    code = "import sys; sys.modules['mpi4py'] = None; from charrnn_cli.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code, "train", str(cfg)], capture_output=True, text=True,
                         env=clean_env(PMI_SIZE="2", PMI_RANK="0"))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out
    assert "started by an MPI launcher with 2 processes, but mpi4py is not installed" in out.stderr
    assert 'pip install "charrnn[mpi]"' in out.stderr and not (tmp_path / "run").exists()


# ---- with mpiexec ---------------------------------------------------------------------------


@needs_mpi
@pytest.mark.parametrize("optimizer,mt", [("sgd", "lstm"), ("adam", "gru")])
def test_two_processes_train_the_same_model_as_one(tmp_path, optimizer, mt):
    raw = tiny(tmp_path, optimizer=optimizer, learning_rate=0.1 if optimizer == "sgd" else 0.01)
    raw["model"]["type"] = mt  # 2 layers with dropout 0.2 (make_config)
    raw["training"]["random_cuts"] = mt == "gru"  # every process draws the same first chunk
    raw["model"]["weight_drop"] = 0.3 if mt == "gru" else 0.0  # and the same weight-drop masks
    raw["model"]["embedding"] = 5 if mt == "gru" else 0  # an input embedding's gradient is averaged too
    one = charrnn("train", write_yaml(tmp_path, raw, "one.yaml"), "--quiet")
    assert one.returncode == 0, one.stderr
    raw["output"]["dir"] = str(tmp_path / "two")
    two = charrnn("train", write_yaml(tmp_path, raw, "two.yaml"), n=2)
    assert two.returncode == 0, two.stderr
    assert "processes: 2 on 1 host, 2 streams each" in two.stderr
    assert two.stdout.count("stopped at max_steps: step 30") == 1  # rank 0 alone speaks
    a, b = params(tmp_path / "run" / "latest.npz"), params(tmp_path / "two" / "latest.npz")
    assert a.keys() == b.keys() and {"state.h"} <= set(a)
    if optimizer == "sgd":  # the same model, to float32 summation order
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=2e-6, err_msg=k)
    np.testing.assert_allclose(val_losses(tmp_path / "run"), val_losses(tmp_path / "two"), rtol=1e-4)
    one_m = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
    two_m = read_metrics(str(tmp_path / "two" / "metrics.jsonl"))
    assert [r["step"] for r in one_m] == [r["step"] for r in two_m]  # one log, every step once
    assert [r["chars_seen"] for r in one_m] == [r["chars_seen"] for r in two_m]  # global figures


@needs_mpi
def test_both_processes_hold_bitwise_identical_parameters(tmp_path):
    cfg = write_yaml(tmp_path, tiny(tmp_path, max_steps=12))
    out = subprocess.run([MPIEXEC, "-n", "2", sys.executable, os.path.join(HERE, "mpi_worker.py"), str(cfg),
                          str(tmp_path)], capture_output=True, text=True, timeout=180, env=clean_env())
    assert out.returncode == 0, out.stderr
    r0, r1 = dict(np.load(tmp_path / "rank0.npz")), dict(np.load(tmp_path / "rank1.npz"))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert r0[k].tobytes() == r1[k].tobytes(), k


@needs_mpi
def test_resume_across_process_counts(tmp_path):
    raw = tiny(tmp_path, max_steps=20, name="straight1")
    assert charrnn("train", write_yaml(tmp_path, raw, "s1.yaml"), "--quiet").returncode == 0
    raw["output"]["dir"] = str(tmp_path / "straight2")
    assert charrnn("train", write_yaml(tmp_path, raw, "s2.yaml"), "--quiet", n=2).returncode == 0
    for first, then, name in ((2, None, "a"), (None, 2, "b"), (2, 2, "c")):
        raw["output"]["dir"] = str(tmp_path / name)
        raw["training"]["max_steps"] = 10
        cfg = write_yaml(tmp_path, raw, f"{name}.yaml")
        assert charrnn("train", cfg, "--quiet", n=first).returncode == 0
        r = charrnn("train", cfg, "--quiet", "--resume", tmp_path / name / "latest.npz",
                    "--set", "training.max_steps=20", n=then)
        assert r.returncode == 0, r.stderr
    same_r = params(tmp_path / "straight2" / "latest.npz")
    for k, v in params(tmp_path / "c" / "latest.npz").items():  # 2 -> 2: exact
        assert v.tobytes() == same_r[k].tobytes(), k
    for name, ref in (("a", "straight1"), ("b", "straight2")):  # 2 -> 1 and 1 -> 2: summation order
        a, b = params(tmp_path / name / "latest.npz"), params(tmp_path / ref / "latest.npz")
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-5, err_msg=(name, k))


@needs_mpi
def test_batch_size_not_divisible_by_the_processes(tmp_path):
    r = charrnn("train", write_yaml(tmp_path, tiny(tmp_path)), n=3)  # batch_size 4
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("Error: training.batch_size 4 does not split over 3 processes") == 1
    assert not (tmp_path / "run").exists()


@needs_mpi
def test_a_non_finite_loss_stops_every_process_with_one_message(tmp_path):
    raw = tiny(tmp_path, optimizer="sgd", learning_rate=1e38, grad_clip=0.0, checkpoint_every=1)
    r = charrnn("train", write_yaml(tmp_path, raw), "--quiet", n=2, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("Error: the ") == 1 and " became " in r.stderr and "Last good checkpoint" in r.stderr
    ckpt.load(str(tmp_path / "run" / "latest.npz"))  # the last good checkpoint is intact and finite


def _start(tmp_path):
    raw = tiny(tmp_path, max_steps=1_000_000, checkpoint_every=5, log_every=1, eval_every=1_000_000)
    cfg = write_yaml(tmp_path, raw)
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "charrnn_cli", "train", str(cfg), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
                            start_new_session=True)
    wait_for_lines(tmp_path / "run" / "metrics.jsonl", 12, proc, timeout=90)
    return proc


@needs_mpi
def test_ctrl_c_stops_every_process_at_one_step_and_saves(tmp_path):
    proc = _start(tmp_path)
    proc.send_signal(signal.SIGINT)  # to mpiexec, as Ctrl-C in its terminal; it passes it on
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.count("interrupted by SIGINT: saved") == 1 and "Traceback" not in err
    ck = ckpt.load(str(tmp_path / "run" / "latest.npz"))
    assert ck.scalar("train.step") >= 12 and ck.arrays["state.h"].shape[1] == 4  # all streams gathered


def _pid_of_rank(rank, marker):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            environ = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "charrnn_cli" in cmdline and marker in cmdline and f"PMI_RANK={rank}" in environ:
            return int(pid)
    return None


@needs_mpi
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the rank's process in /proc")
def test_a_killed_process_ends_the_job_within_seconds(tmp_path):
    proc = _start(tmp_path)
    pid = _pid_of_rank(1, str(tmp_path))
    assert pid is not None
    t = time.time()
    os.kill(pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and time.time() - t < 20
    ckpt.load(str(tmp_path / "run" / "latest.npz"))  # the checkpoints written before are intact
