"""The Ray session of a search: connect to ``settings.ray_address`` or start a small
local Ray, and shut it down afterwards."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import ray

from airloop.core.naming import ray_temp_dir
from airloop.core.settings import disable_telemetry

log = logging.getLogger(__name__)

RAY_START_ATTEMPTS = 3


@contextlib.contextmanager
def ray_session(settings) -> Iterator[None]:
    """Connect to ``settings.ray_address`` or start a small local Ray; shut down after.

    A session the caller already holds (``ray.is_initialized()``: tests, notebooks) is
    used as is and left running.
    """
    disable_telemetry()
    # No per-trial result files (JSON/CSV/TensorBoard): the trials' history goes to MLflow.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        yield
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
    else:
        temp = ray_temp_dir(settings.home)
        temp.mkdir(parents=True, exist_ok=True)
        # Ray gives a new node a fixed 30 s to register (hard-coded in ray._private.node);
        # on a saturated machine its agents can take longer to import. Starting again is
        # cheap next to failing the task.
        for attempt in range(1, RAY_START_ATTEMPTS + 1):
            try:
                ray.init(
                    address="local",
                    num_cpus=2,
                    include_dashboard=False,
                    _temp_dir=str(temp),
                    log_to_driver=False,
                )
                break
            except Exception as exc:
                if "timed out during startup" not in str(exc) or attempt == RAY_START_ATTEMPTS:
                    raise
                log.warning("local Ray did not start (attempt %d): %s; retrying", attempt, exc)
                ray.shutdown()
    try:
        yield
    finally:
        ray.shutdown()
