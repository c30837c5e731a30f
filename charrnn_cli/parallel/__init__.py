"""Processes: the team that shares one training step (team.py), the MPI world of a data-parallel
job (dist.py), and how the cores and BLAS threads are planned before NumPy loads (cores.py)."""
