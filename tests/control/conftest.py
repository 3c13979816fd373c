"""Control-plane tests run in the control environment (Airflow + providers).

Airflow reads its configuration at import, so the environment is set here, before any
test module imports Airflow: a private AIRFLOW_HOME (an empty SQLite file that parsing
must never touch), the repository's dags/ and plugins/ folders, no examples.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config) -> None:
    home = Path(tempfile.mkdtemp(prefix="airloop-airflow-home-"))
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    # The 2-core test machine is shared; the default 30 s import timeout is about
    # production parse budgets, not about this file's correctness.
    os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "300")
    for key, value in {"DO_NOT_TRACK": "true", "SCARF_ANALYTICS": "false"}.items():
        os.environ.setdefault(key, value)
    # Airflow puts the plugins folder on sys.path when it starts; so do the tests.
    if str(REPO / "plugins") not in sys.path:
        sys.path.insert(0, str(REPO / "plugins"))


# -- parse probe --------------------------------------------------------------------
import contextlib  # noqa: E402
import functools  # noqa: E402

import pytest  # noqa: E402

#: Libraries of the step runtime that must never be imported by parsing a DAG file.
HEAVY_MODULES = (
    "mlflow", "sklearn", "ray", "feast", "evidently", "great_expectations", "dvc",
    "torch", "xgboost", "mlserver", "duckdb",
)


class ParseProbe:
    """Counts what really happens while DAG files are parsed (nothing is mocked away).

    * every SQL statement on any SQLAlchemy engine (``before_cursor_execute``);
    * every connection and variable lookup: the Task SDK entry points
      (``Connection.get`` / ``Variable.get`` go through them), the ORM model's
      ``get_connection_from_secrets`` and each loaded secrets backend's getters.
    The wrappers call through to the real implementation.
    """

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.lookups: list[str] = []
        self.imported: set[str] = set()

    @contextlib.contextmanager
    def watching(self):
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        def on_sql(conn, cursor, statement, *args):
            self.queries.append(statement)

        undo = []
        event.listen(Engine, "before_cursor_execute", on_sql)
        undo.append(lambda: event.remove(Engine, "before_cursor_execute", on_sql))
        for owner, name in self._lookup_targets():
            undo.append(self._wrap(owner, name))
        before = set(sys.modules)
        try:
            yield self
        finally:
            self.imported |= set(sys.modules) - before
            for fn in reversed(undo):
                fn()

    @staticmethod
    def _lookup_targets():
        import airflow.sdk.execution_time.context as ctx
        from airflow.models.connection import Connection
        from airflow.models.variable import Variable
        from airflow.sdk.execution_time.supervisor import ensure_secrets_backend_loaded

        targets = [(ctx, "_get_connection"), (ctx, "_get_variable")]
        targets += [(Connection, "get_connection_from_secrets"), (Variable, "get_variable_from_secrets")]
        seen = set()
        for backend in ensure_secrets_backend_loaded():
            for name in ("get_connection", "get_conn_value", "get_variable"):
                for klass in type(backend).__mro__:
                    if name in klass.__dict__ and (klass, name) not in seen:
                        seen.add((klass, name))
                        targets.append((klass, name))
                        break
        return [(o, n) for o, n in targets if hasattr(o, n)]

    def _wrap(self, owner, name):
        original = owner.__dict__[name] if name in vars(owner) else getattr(owner, name)
        label = f"{getattr(owner, '__name__', owner)}.{name}"
        sink = self.lookups
        if isinstance(original, classmethod):
            fn = original.__func__

            @functools.wraps(fn)
            def counted_cm(cls, *args, **kwargs):
                sink.append(label)
                return fn(cls, *args, **kwargs)

            replacement = classmethod(counted_cm)
        elif isinstance(original, staticmethod):
            fn = original.__func__

            @functools.wraps(fn)
            def counted_sm(*args, **kwargs):
                sink.append(label)
                return fn(*args, **kwargs)

            replacement = staticmethod(counted_sm)
        else:

            @functools.wraps(original)
            def counted(*args, **kwargs):
                sink.append(label)
                return original(*args, **kwargs)

            replacement = counted
        setattr(owner, name, replacement)
        return lambda: setattr(owner, name, original)


def parse_dags(mode: str, projects_dir: Path | None = None):
    """Parse ``dags/`` with a fresh import of the plugin package; (DagBag, ParseProbe)."""
    from airflow.dag_processing.dagbag import DagBag

    saved = {k: os.environ.get(k) for k in ("AIRLOOP_MODE", "AIRLOOP_PROJECTS_DIR")}
    os.environ["AIRLOOP_MODE"] = mode
    os.environ["AIRLOOP_PROJECTS_DIR"] = str(projects_dir or REPO / "include" / "projects")
    for name in [m for m in sys.modules if m == "airloop_ops" or m.startswith("airloop_ops.")]:
        del sys.modules[name]
    probe = ParseProbe()
    try:
        with probe.watching():
            bag = DagBag(dag_folder=str(REPO / "dags"))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return bag, probe


@pytest.fixture(scope="session")
def local_bag():
    return parse_dags("local")


@pytest.fixture(scope="session")
def k8s_bag():
    # KubernetesPodOperator is constructed offline: no API server exists on this machine
    # and none is needed to parse or to build pod specs.
    return parse_dags("kubernetes")
