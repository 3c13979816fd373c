"""DAG integrity: every DAG file imports, parsing is hygienic, each project gets its five
DAGs with the expected graph, schedules, params, owner, tags and retries, and an invalid
spec becomes one clear import error while the valid projects still load."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from conftest import HEAVY_MODULES, REPO, ParseProbe, parse_dags

from airloop.core.spec import load_all

SPECS = load_all(REPO / "include" / "projects")
KINDS = ("ingest", "materialize", "train", "monitor", "batch_predict")
STEP_TASKS = {
    "ingest": {"ingest"},
    "materialize": {"materialize"},
    "train": {"train", "register", "gate", "deploy", "promote"},
    "monitor": {"monitor"},
    "batch_predict": {"batch_predict"},
}
GRAPHS = {
    "ingest": {"ingest": set()},
    "materialize": {"materialize": set()},
    "train": {
        "train": {"register"},
        "register": {"gate"},
        "gate": {"promotion_decision"},
        "promotion_decision": {"deploy", "rejected"},
        "deploy": {"promote"},
        "promote": set(),
        "rejected": set(),
    },
    "monitor": {
        "monitor": {"retrain_decision"},
        "retrain_decision": {"retrain", "no_retrain"},
        "retrain": set(),
        "no_retrain": set(),
    },
    "batch_predict": {"batch_predict": set()},
}


def _dag(bag, dag_id: str):
    """A parsed DAG (``DagBag.get_dag`` would read the metadata DB)."""
    return bag.dags[dag_id]


def test_the_bundled_demo_project_is_among_the_projects():
    """Tests below use the demo ``churn`` DAGs by name; other projects may sit beside it."""
    assert "churn" in {s.name for s in SPECS}


@pytest.mark.parametrize("mode", ["local", "kubernetes"])
def test_dag_files_import_without_errors(mode, local_bag, k8s_bag):
    bag, _ = local_bag if mode == "local" else k8s_bag
    assert bag.import_errors == {}
    expected = {f"{s.name}__{k}" for s in SPECS for k in KINDS}
    assert set(bag.dag_ids) == expected


@pytest.mark.parametrize("mode", ["local", "kubernetes"])
def test_parsing_queries_no_db_looks_up_no_connection_imports_no_ml(mode, local_bag, k8s_bag):
    bag, probe = local_bag if mode == "local" else k8s_bag
    assert bag.dags, "nothing was parsed: the probe would prove nothing"
    assert probe.queries == [], f"DB queries while parsing: {probe.queries}"
    assert probe.lookups == [], f"connection/variable lookups while parsing: {probe.lookups}"
    heavy = sorted({m.split(".")[0] for m in probe.imported} & set(HEAVY_MODULES))
    assert heavy == [], f"parsing imported runtime libraries: {heavy}"
    assert any(m.startswith("airloop_ops") for m in probe.imported), "plugin not re-imported"


def test_parse_probe_sees_queries_and_lookups(monkeypatch):
    """The probe is not blind: a real query and a real connection lookup are counted."""
    from airflow import settings
    from airflow.sdk.bases.hook import BaseHook
    from sqlalchemy import text

    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_PROBE", '{"conn_type": "http", "host": "example"}')
    probe = ParseProbe()
    with probe.watching():
        with settings.engine.connect() as conn:
            conn.execute(text("select 1"))
        assert BaseHook.get_connection("airloop_probe").host == "example"
    assert any("select 1" in q for q in probe.queries)
    assert probe.lookups, "a connection lookup went uncounted"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("kind", KINDS)
def test_dag_settings(local_bag, spec, kind):
    bag, _ = local_bag
    dag = _dag(bag, f"{spec.name}__{kind}")
    assert dag.catchup is False
    assert dag.start_date.tzinfo is not None and dag.start_date.utcoffset() == timedelta(0)
    assert {"airloop", spec.tenant, spec.name, kind} <= set(dag.tags)
    assert dag.default_args["retries"] >= 1
    assert dag.default_args["retry_delay"] > timedelta(0)
    assert dag.owner == spec.contact
    module_doc = (REPO / "dags" / "airloop_projects.py").read_text().split('"""')[1]
    assert dag.doc_md and module_doc.strip() in dag.doc_md
    for task in dag.tasks:
        assert task.owner == spec.contact
        assert task.retries == dag.default_args["retries"]
    if kind in ("train", "monitor"):
        assert dag.max_active_runs == 1


@pytest.mark.parametrize("mode", ["local", "kubernetes"])
@pytest.mark.parametrize("kind", KINDS)
def test_task_graph(local_bag, k8s_bag, mode, kind):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from airloop_ops.local import LocalStepOperator

    bag, _ = local_bag if mode == "local" else k8s_bag
    for spec in SPECS:
        dag = _dag(bag, f"{spec.name}__{kind}")
        graph = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
        assert graph == GRAPHS[kind]
        for task_id in STEP_TASKS[kind]:
            task = dag.get_task(task_id)
            if mode == "local":
                # The plugin package is re-imported per parse: compare by name.
                assert type(task).__name__ == LocalStepOperator.__name__
            else:
                assert isinstance(task, KubernetesPodOperator)


def test_schedules_and_assets(local_bag):
    bag, _ = local_bag
    for spec in SPECS:
        ingest = _dag(bag, f"{spec.name}__ingest")
        materialize = _dag(bag, f"{spec.name}__materialize")
        (outlet,) = ingest.get_task("ingest").outlets
        assert outlet.name == f"{spec.name}__dataset"
        assert outlet.uri == f"airloop://{spec.tenant}/{spec.name}/offline"
        consumed = materialize.timetable.asset_condition.objects
        assert [(a.name, a.uri) for a in consumed] == [(outlet.name, outlet.uri)]
        # The spec's cron schedules, in UTC ("@hourly" is normalised to its cron form).
        crons = {"@hourly": "0 * * * *", "@daily": "0 0 * * *"}
        for kind in ("ingest", "monitor", "batch_predict"):
            timetable = _dag(bag, f"{spec.name}__{kind}").timetable
            wanted = spec.schedules.model_dump()[kind]
            assert type(timetable).__name__ == "CronTriggerTimetable"
            assert timetable.expression == crons.get(wanted, wanted)
            assert str(timetable.timezone) in ("UTC", "Timezone('UTC')")
        assert type(_dag(bag, f"{spec.name}__train").timetable).__name__ == "NullTimetable"


def _validated(dag, conf):
    """The trigger path's check: conf merged into the DAG's params, then validated."""
    params = copy.deepcopy(dag.params)
    params.update(conf)
    return params.validate()


def test_train_params_accept_known_triggers_and_reject_others(local_bag):
    from airflow.sdk.exceptions import ParamValidationError

    bag, _ = local_bag
    dag = _dag(bag, "churn__train")
    assert dag.params["trigger"] == "manual"
    for trigger in ("manual", "schedule", "drift", "api"):
        assert _validated(dag, {"trigger": trigger, "reason": "x"})["trigger"] == trigger
    assert _validated(dag, {})["reason"] is None
    for bad in ({"trigger": "because-i-said-so"}, {"trigger": "api", "reason": 42}):
        with pytest.raises(ParamValidationError):
            _validated(dag, bad)


def test_train_passes_the_trigger_param_to_the_step(local_bag):
    bag, _ = local_bag
    task = _dag(bag, "churn__train").get_task("train")
    assert task.arguments[-2:] == ["--trigger", "{{ params.trigger }}"]
    task = copy.deepcopy(task)
    task.render_template_fields({"run_id": "api__1", "params": {"trigger": "drift"}})
    assert task.arguments == ["train", "--project", "churn", "--run-id", "api__1", "--trigger", "drift"]


def test_monitor_triggers_train_with_drift_conf(local_bag):
    bag, _ = local_bag
    dag = _dag(bag, "churn__monitor")
    retrain = dag.get_task("retrain")
    assert type(retrain).__name__ == "TriggerDagRunOperator"
    assert retrain.trigger_dag_id == "churn__train"
    assert retrain.conf["trigger"] == "drift"
    assert "xcom_pull(task_ids='monitor')" in retrain.conf["reason"]
    # The conf the monitor sends passes the train DAG's own param validation.
    _validated(_dag(bag, "churn__train"), {"trigger": "drift", "reason": "drift share 0.5"})


class _TI:
    """A task instance's ``xcom_pull`` only (the branch callable needs nothing else)."""

    def __init__(self, results):
        self.results = results

    def xcom_pull(self, task_ids):
        return self.results.get(task_ids)


@pytest.mark.parametrize(
    ("kind", "task_id", "source", "result", "expected"),
    [
        ("train", "promotion_decision", "gate", {"promote": True}, "deploy"),
        ("train", "promotion_decision", "gate", {"promote": False}, "rejected"),
        ("monitor", "retrain_decision", "monitor", {"retrain": True, "reason": "d"}, "retrain"),
        ("monitor", "retrain_decision", "monitor", {"retrain": False}, "no_retrain"),
    ],
)
def test_branches_follow_the_step_decision(local_bag, kind, task_id, source, result, expected):
    bag, _ = local_bag
    branch = _dag(bag, f"churn__{kind}").get_task(task_id)
    chosen = branch.python_callable(ti=_TI({source: result}), **branch.op_kwargs)
    assert chosen == expected
    assert chosen in branch.downstream_task_ids


def test_branch_without_decision_fails_loudly(local_bag):
    from airloop.core.errors import AirloopError

    bag, _ = local_bag
    branch = _dag(bag, "churn__train").get_task("promotion_decision")
    with pytest.raises(AirloopError, match="promote"):
        branch.python_callable(ti=_TI({"gate": {"challenger_version": 3}}), **branch.op_kwargs)


def _write_spec(folder: Path, name: str, **overrides) -> Path:
    raw = yaml.safe_load((REPO / "include" / "projects" / "churn.yaml").read_text())
    raw.update(name=name, **overrides)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bad_spec_is_an_import_error_and_good_projects_still_load(tmp_path):
    _write_spec(tmp_path, "churn")
    _write_spec(tmp_path, "broken", metric={"name": "roc_auc", "mode": "sideways"})
    bag, probe = parse_dags("local", tmp_path)
    assert {d for d in bag.dag_ids} == {f"churn__{k}" for k in KINDS}
    (message,) = bag.import_errors.values()
    assert str(tmp_path / "broken.yaml") in message
    assert "metric.mode" in message and "sideways" in message
    assert message.startswith("SpecError: ")
    assert "airloop_projects.py" in next(iter(bag.import_errors))
    assert probe.queries == [] and probe.lookups == []


def test_every_bad_spec_is_reported(tmp_path):
    _write_spec(tmp_path, "first", tenant="Not A Tenant")
    (tmp_path / "second.yaml").write_text("name: second\ndata: [unclosed\n")
    bag, _ = parse_dags("local", tmp_path)
    assert bag.dag_ids == []
    (message,) = bag.import_errors.values()
    assert "first.yaml: tenant:" in message
    assert "second.yaml: line" in message and "malformed YAML" in message


def test_a_second_project_gets_its_own_dags(tmp_path):
    """Adding a project is adding a spec: its five DAGs appear beside the demo's."""
    _write_spec(tmp_path, "churn")
    _write_spec(tmp_path, "upsell", tenant="acme")
    bag, probe = parse_dags("local", tmp_path)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {f"{p}__{k}" for p in ("churn", "upsell") for k in KINDS}
    upsell = _dag(bag, "upsell__train")
    assert {"acme", "upsell"} <= set(upsell.tags)
    assert {t.task_id: set(t.downstream_task_ids) for t in upsell.tasks} == GRAPHS["train"]
    assert upsell.get_task("train").arguments[:3] == ["train", "--project", "upsell"]
    assert probe.queries == [] and probe.lookups == []
