"""airloop's Airflow side: the step operator factory and the per-project DAG builder.

The plugins folder is on Airflow's ``sys.path``, so DAG files import this package
directly (``from airloop_ops import build_all``). Nothing here imports ML libraries:
steps run in the runtime environment (a pod or the runtime virtualenv), never in Airflow.
"""

from airloop_ops.factory import step_arguments, step_operator

__all__ = ["step_arguments", "step_operator"]
