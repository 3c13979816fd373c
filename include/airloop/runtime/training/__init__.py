"""The train step's parts, one concern per module (the step itself is
:mod:`airloop.runtime.steps.train`).

- :mod:`.split` — time-based train / validation / holdout split of the training frame.
- :mod:`.ray_session` — connect to Ray or start a small local one (with start retries).
- :mod:`.search` — the Ray Tune search: domains, the trainable, ASHA, the trials' outcome.
- :mod:`.trials` — every trial as a child MLflow run (a Tune ``MLflowLoggerCallback``).
- :mod:`.parent` — the DAG run's parent MLflow run: reuse, stale runs, start, finish.
- :mod:`.refit` — refit the best configuration, score the holdout, log datasets and model.
"""
