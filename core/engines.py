"""Where batch work runs: in this process (``local``, the default) or on a Ray cluster (``ray``).

The Ray engine streams the rows (image paths) through Ray Data's ``map_batches`` with a callable
class: each long-lived actor loads the model once and predicts batch after batch, so the work
spreads over every CPU of every node. It connects to ``RAY_ADDRESS`` when set (an existing
cluster; every node must read the model and the images at the same paths) and otherwise starts a
local Ray for the call. Ray Data restarts an actor that dies (``max_restarts=-1``) and retries
its batch (``max_task_retries=-1``); each row carries its index, and the result is refused unless
every index comes back exactly once, so a retried batch can neither lose nor duplicate rows.

Ray is optional (``requirements-ray.txt``): the local engine never imports it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

if TYPE_CHECKING:
    import pandas as pd

#: The engines batch commands accept -> one line for a UI.
ENGINES: dict[str, str] = {
    "local": "this process (the default)",
    "ray": "Ray Data actors: a Ray cluster at $RAY_ADDRESS, else a local Ray started for the call",
}
#: Rows per Ray Data batch (one actor call): the Predictor's own batch size.
RAY_BATCH = 64
#: Environment variable read by the actors: a file whose presence makes an actor exit mid-batch once
#: (it is removed first). For the fault test only: a real process death, not a simulated error.
_CRASH_ONCE = "LOUPE_RAY_CRASH_ONCE"


class EngineError(RuntimeError):
    """An engine cannot run here (Ray not installed or unreachable), or returned incomplete results."""


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}; received engine={engine!r}")
    return engine


@contextlib.contextmanager
def ray_session(*, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected: an already initialized Ray is reused, ``$RAY_ADDRESS`` is joined, else a local Ray
    is started (and shut down on exit). ``num_cpus`` caps a local Ray (default: every core)."""
    try:
        import ray
    except ImportError as exc:
        raise EngineError("the Ray engine needs Ray: pip install -r requirements-ray.txt") from exc
    if ray.is_initialized():
        yield ray
        return
    import core

    address = os.environ.get("RAY_ADDRESS") or None
    # the actors import Loupe's core package: shipped with the job, so a cluster's nodes need no checkout
    env = {"py_modules": [str(Path(core.__file__).parent)],
           "env_vars": {k: v for k, v in os.environ.items() if k in ("KERAS_HOME", "TF_CPP_MIN_LOG_LEVEL",
                                                                     "LOUPE_HOME", _CRASH_ONCE)}}
    try:
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=False, runtime_env=env, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray"
        raise EngineError(f"could not start or reach {where}: {type(exc).__name__}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def crash_once_for_tests() -> None:
    """In an actor: exit the process at once if ``$LOUPE_RAY_CRASH_ONCE`` names a file that exists (removing it
    first, so only one actor dies, once). For the fault test: a real process death mid-batch."""
    marker = os.environ.get(_CRASH_ONCE)
    if marker:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)
            os._exit(1)


def _from_arrow(parts: list) -> "pd.DataFrame":
    """Arrow batches as one DataFrame (the caller restores its dtypes: a column that was all NaN or NA in a
    batch crossed Arrow as a null column)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    if not parts:
        return pd.DataFrame({"_row": np.zeros(0, np.int64)})
    out = pa.concat_tables(parts, promote_options="default").to_pandas()
    out["_row"] = out["_row"].astype(np.int64)
    return out


def map_rows_with_ray(rows: "pd.DataFrame", actor: type, *, actor_kwargs: Mapping[str, Any],
                      dtypes: Mapping[str, Any], progress: Callable[[int, int], None] | None = None,
                      num_cpus: int | None = None, batch_size: int = RAY_BATCH) -> "pd.DataFrame":
    """``actor``'s output rows for ``rows``, computed by Ray Data actors, in ``rows``' order.

    ``actor(**actor_kwargs)`` is built once per actor; calling it with a batch (a DataFrame slice of
    ``rows`` with an added ``_row`` column) returns a DataFrame with that ``_row`` column and one row per
    input row. ``dtypes``: the columns' dtypes as the local engine gives them (restored after the rows
    crossed Arrow, where a column all NaN or NA in a batch becomes a null column).

    Raises
    ------
    EngineError
        Ray is missing or unreachable, or some row did not come back exactly once.
    """
    import numpy as np

    n = len(rows)
    rows = rows.reset_index(drop=True).assign(_row=np.arange(n, dtype=np.int64))
    with ray_session(num_cpus=num_cpus) as ray:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        actors = max(1, min(cpus, -(-n // batch_size)))
        # one block per batch, so every actor gets work from the start
        blocks = [rows.iloc[i:i + batch_size] for i in range(0, n, batch_size)] or [rows]
        ds = ray.data.from_pandas(blocks).map_batches(
            actor, fn_constructor_kwargs=dict(actor_kwargs), batch_size=batch_size, batch_format="pandas",
            concurrency=actors, num_cpus=1)
        parts, done = [], 0
        for part in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            parts.append(part)
            done += part.num_rows
            if progress:
                progress(min(done, n), n)
    out = _from_arrow(parts)
    got = np.sort(out["_row"].to_numpy(np.int64))
    if len(got) != n or not np.array_equal(got, np.arange(n)):
        missing = np.setdiff1d(np.arange(n), got)
        raise EngineError(f"the Ray engine returned {len(got)} rows for {n} ({len(missing)} missing, "
                          f"{len(got) - len(np.unique(got))} duplicated): nothing was written")
    out = out.sort_values("_row", kind="stable").drop(columns="_row").reset_index(drop=True)
    return out.astype(dict(dtypes))
