"""Clients of airloop's public APIs.

Usable by external systems, the demo, the tests and the benchmarks: they talk to a
running platform over its public HTTP APIs only (today Airflow's REST API, see
:mod:`airloop.api.airflow`), so they import the core and nothing of any plane.
"""
