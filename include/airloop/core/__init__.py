"""The shared core: project spec, settings, errors, names and small I/O helpers.

Imported by every plane (Airflow's DAG files, the step runtime, the model server and
the local devstack), so it depends only on the standard library, pydantic(-settings),
PyYAML and jsonschema, and imports no plane.
"""
