"""How the champion is doing on live traffic: the evaluation the ``monitor`` step runs.

One concern per module, imported by name (this package re-exports nothing):

* :mod:`.drift` — column and dataset drift with Evidently's stat tests, on seeded samples;
* :mod:`.performance` — classification quality of the labelled rows with Evidently;
* :mod:`.report` — the Evidently HTML report, with the verdict's methods and thresholds;
* :mod:`.guardrails` — cool-down and max-retrains-per-day decisions and their state file;
* :mod:`.exposition` — the Prometheus metrics (textfile-collector format).

None of them touches MLflow or the prediction log; the step
(:mod:`airloop.runtime.steps.monitor`) does the I/O.
"""
