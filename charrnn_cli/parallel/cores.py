"""How a training process uses the machine's cores, decided before NumPy loads its BLAS.

Two ways to use several cores in one training process: BLAS threads (every product split between
them, every elementwise call on one core) and a team (team.py: the hidden units split between
processes, each with its own BLAS threads, so the elementwise work is split too). A BLAS reads its
thread count once, when NumPy loads it, so `charrnn train` decides both first:

    training.threads      BLAS threads per process (null: the cores divided among the team)
    training.unit_split   processes in the team (null: 2 where it pays, see team_size)

Stdlib only: nothing here may import NumPy.
"""

import os

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")

# How launchers tell a process how many processes the job has (MPICH and Intel MPI: PMI_SIZE;
# Open MPI: OMPI_COMM_WORLD_SIZE; MVAPICH: MV2_COMM_WORLD_SIZE; Slurm's srun: SLURM_STEP_NUM_TASKS
# with SLURM_PROCID set for the step's tasks).
LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

# The smallest hidden size the team takes on by itself: below it a step's elementwise calls are
# too short to be worth splitting (docs/performance.md, the team).
TEAM_MIN_HIDDEN = 128


def launcher_size(environ=None):
    """How many processes the launcher started, per the environment (1 when not launched)."""
    env = os.environ if environ is None else environ
    for var in LAUNCHER_SIZE_VARS:
        if env.get(var, "").isdigit():
            return int(env[var])
    if "SLURM_PROCID" in env and env.get("SLURM_STEP_NUM_TASKS", "").isdigit():
        return int(env["SLURM_STEP_NUM_TASKS"])
    return 1


def usable_cores():
    """The cores this process may run on (its CPU affinity, where the system says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory(meminfo="/proc/meminfo"):
    """Bytes of memory the system can give without swapping (MemAvailable), or None where unknown."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def blas_threads(environ=None):
    """The BLAS thread count the environment sets, or None."""
    env = os.environ if environ is None else environ
    for var in THREAD_VARIABLES:
        if env.get(var, "").strip().isdigit():
            return int(env[var])
    return None


def auto_team(hidden_size, environ=None, cores=None):
    """2 where the team pays by default: 2 or more cores, not an MPI job, an even hidden size of at
    least TEAM_MIN_HIDDEN; else 1."""
    cores = usable_cores() if cores is None else cores
    if cores < 2 or launcher_size(environ) > 1 or hidden_size % 2 or hidden_size < TEAM_MIN_HIDDEN:
        return 1
    return 2 if hasattr(os, "fork") else 1  # the team forks (not on Windows)


def _auto_size(m_cfg, environ, cores):
    """unit_split null: the automatic choice, 1 for a layer-normalised model (it reads every unit)."""
    return 1 if m_cfg.layer_norm else auto_team(m_cfg.hidden_size, environ, cores)


def plan_threads(t_cfg, m_cfg, threads=None, environ=None, cores=None):
    """The BLAS threads to set before NumPy loads (None: leave the BLAS default): `threads` (the
    command line's), else training.threads, else the cores divided among the team when there is one."""
    if threads or t_cfg.threads:
        return threads or t_cfg.threads
    cores = usable_cores() if cores is None else cores
    size = t_cfg.unit_split or _auto_size(m_cfg, environ, cores)
    return max(1, cores // size) if size > 1 else None


def team_size(t_cfg, m_cfg, environ=None, cores=None):
    """The processes that share each step: training.unit_split, or for null the automatic choice,
    taken only when the BLAS threads are set to leave each process its share of the cores (as
    `charrnn train` sets them; in a program that loaded NumPy first, one process)."""
    if t_cfg.unit_split:
        return t_cfg.unit_split
    cores = usable_cores() if cores is None else cores
    size = _auto_size(m_cfg, environ, cores)
    threads = blas_threads(environ)
    if size > 1 and (threads is None or threads * size > cores):
        return 1  # each process's BLAS would use every core: they would fight over them
    return size


def oversubscribed(t_cfg, m_cfg, threads, environ=None, cores=None):
    """A warning when the team's processes times their BLAS threads exceed the cores this process
    may use (each would wait on the others: a step many times slower), else None. `threads` is
    what plan_threads chose (None: the BLAS default, every core)."""
    cores = usable_cores() if cores is None else cores
    env = os.environ if environ is None else environ
    size = team_size(t_cfg, m_cfg, env, cores) if launcher_size(env) == 1 else 1
    per = threads or blas_threads(env) or cores
    if size * per <= cores:
        return None
    fix = (f"training.unit_split {size} on {cores} cores: use 1" + (f" or {cores}" if cores > 1 else "")
           if size > cores else f"--threads {max(1, cores // size)}")
    return (f"warning: {size} process{'es' * (size > 1)} x {per:,} BLAS thread{'s' * (per > 1)} = {size * per:,} on "
            f"{cores} usable core{'s' * (cores > 1)}: they will wait on each other and train many times slower "
            f"({fix})")


def set_threads(n):
    """Set the BLAS thread count for this process: effective only before NumPy is imported.
    Returns False when NumPy was loaded already (too late)."""
    import sys

    if n is None:
        return True
    if "numpy" in sys.modules:
        return False
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    return True


# OPENBLAS_CORETYPE names (lower case) by the vector instructions their kernels use: 1 AVX, 2 AVX2,
# 3 AVX-512. Older or unknown names are not judged.
_KERNEL_LEVEL = {"sandybridge": 1, "bulldozer": 1, "piledriver": 1, "steamroller": 1, "haswell": 2, "zen": 2,
                 "excavator": 2, "skylakex": 3, "cooperlake": 3, "sapphirerapids": 3}
_LEVEL_NAME = {1: "AVX", 2: "AVX2", 3: "AVX-512"}


def cpu_vector_level(cpuinfo="/proc/cpuinfo"):
    """The widest vector instructions the CPU reports: 3 AVX-512, 2 AVX2, 1 AVX, 0 none or unknown."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return 3 if "avx512f" in flags else 2 if "avx2" in flags else 1 if "avx" in flags else 0
    except OSError:
        pass
    return 0


def blas_pin_note(environ=None, cpuinfo="/proc/cpuinfo"):
    """One line for a user whose OPENBLAS_CORETYPE holds NumPy's BLAS to older kernels than the CPU
    runs (some shared machines set it), or None. The products are most of a training step, and
    such a pin made them 1.6-1.9x slower where measured (docs/bench-log.md)."""
    env = os.environ if environ is None else environ
    pin = env.get("OPENBLAS_CORETYPE", "").strip()
    level = _KERNEL_LEVEL.get(pin.lower(), 0)
    if not level:
        return None  # no pin, or one not judged: /proc/cpuinfo is not read
    cpu = cpu_vector_level(cpuinfo)
    if level >= cpu:
        return None
    return (f"blas: OPENBLAS_CORETYPE={pin} holds NumPy's products to {_LEVEL_NAME[level]} on this "
            f"{_LEVEL_NAME[cpu]} CPU (1.6-1.9x slower); if the machine does not need it: env -u OPENBLAS_CORETYPE charrnn ...")
