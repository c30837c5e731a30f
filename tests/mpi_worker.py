"""Run by the MPI tests under `mpiexec -n 2`: train from a YAML config in every process, then
save this process's parameters to OUT/rank<r>.npz, so the test can compare the processes."""

import sys

import numpy as np

from charrnn_cli.io.config import load_config
from charrnn_cli.parallel.dist import world
from charrnn_cli.training.loop import train


def main(config_path, out):
    comm = world()
    result = train(load_config(config_path), quiet=True, echo=lambda m: None, comm=comm)
    np.savez(f"{out}/rank{comm.rank}.npz", **result.model.params)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
