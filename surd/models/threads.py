"""How many threads a model stage's torch gets: planned from the stage's own workers, not guessed
(torch's default takes every core, whatever else runs beside it)."""

from __future__ import annotations

import os


def plan_threads(setting: int | None, decode_workers: int, processes_per_host: int = 1) -> int:
    """A model stage's torch threads: the setting, or its process's share of the cores (several
    local Dask workers split them) less the decode workers beside it, at least one; so that decode
    workers + model threads of every process on the machine stay within its cores."""
    if setting is not None:
        return setting
    share = (os.cpu_count() or 1) // max(1, processes_per_host)
    return max(1, share - decode_workers)


def use_threads(n: int) -> int:
    """Set torch's intra-op threads (and OpenMP's and MKL's, for what starts after) to `n`."""
    import torch  # only a model stage that runs calls this; the stage module has imported it already

    torch.set_num_threads(n)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    return n
