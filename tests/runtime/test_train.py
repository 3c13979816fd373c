"""Train → register → gate → promote against a real MLflow server and real Ray.

A tiny search (4 samples × 6 iterations, ASHA) on 1,500 rows of the demo generator
over six days. The shared MLflow state is built by module fixtures (train dag_run_1 →
register → gate and promote), so every test passes alone and in any order. The
project gets a unique tenant so its experiment and registered model are private to
this module even though the MLflow server is shared by the session.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import uuid
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import PROJECTS, REPO
from airloop.core import settings as config
from airloop.runtime import tracking
from airloop.core.errors import AirloopError
from airloop.core.spec import load_spec, parse_spec
from airloop.runtime.steps import gate, promote, register, train
from airloop.runtime.training.ray_session import ray_session
from airloop.runtime.training.search import ITERATIONS, report_points
from airloop.runtime.training.split import split_frame

MAX_IT = 6
START = date(2025, 1, 1)
SAMPLES = 4


def synthetic_frame(spec, rows=1500, days=6, seed=0, shuffle_labels=False) -> pd.DataFrame:
    """``days`` daily batches of the demo generator (``rows`` in all), sorted by time.

    ``shuffle_labels`` destroys the signal in all but the last two days, so a model
    trained on it is worse than the champion on the same (true) holdout.
    """
    from airloop.demo.churn import generate_day

    frame = pd.concat(
        [generate_day(spec, d, start=START, rows=rows // days, seed=seed) for d in range(days)],
        ignore_index=True,
    ).sort_values(spec.timestamp, kind="stable", ignore_index=True)
    if shuffle_labels:
        rng = np.random.default_rng(seed)
        cutoff = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=days - 2)
        rows_ = np.flatnonzero(frame[spec.timestamp] < cutoff)
        y = frame[spec.label].to_numpy().copy()
        y[rows_] = rng.permutation(y[rows_])
        frame[spec.label] = y
    return frame[[spec.entity_key, spec.timestamp, *spec.feature_columns, spec.label]]


@pytest.fixture(scope="module")
def settings(mlflow_server):
    s = config.load()
    assert s.tracking_uri == mlflow_server
    return s


@pytest.fixture(scope="module")
def spec():
    raw = load_spec("churn", PROJECTS).model_dump(mode="json")
    raw["tenant"] = f"t{uuid.uuid4().hex[:8]}"
    raw["model"].update(num_samples=SAMPLES, max_iterations=MAX_IT, grace_period=2,
                        reduction_factor=2, max_concurrent_trials=2, holdout_days=2)
    raw["promotion"] = {"min_metric": 0.6, "min_improvement": 0.0}
    return parse_spec(raw, Path("churn.yaml"))


def _variant(spec, **model):
    """The same project (same experiment and registered model) with a smaller search."""
    raw = spec.model_dump(mode="json")
    promotion = model.pop("promotion", None)
    raw["model"].update(model)
    if promotion is not None:
        raw["promotion"] = promotion
    return parse_spec(raw, spec.path)


@pytest.fixture(scope="module")
def ray_up(settings):
    """One local Ray for the module (started by the step's own ray_session)."""
    with ray_session(settings):
        yield


@pytest.fixture(scope="module")
def client(settings):
    return tracking.client(settings)


@pytest.fixture(scope="module")
def first(spec, settings, ray_up):
    return train.run(spec, run_id="dag_run_1", settings=settings, trigger="test",
                     frame=synthetic_frame(spec))


@pytest.fixture(scope="module")
def registered(first, spec, settings, client):
    """dag_run_1's model registered (the module's first registration), registered
    again, and the version the ``challenger`` alias named right after."""
    res = register.run(spec, run_id="dag_run_1", settings=settings)
    again = register.run(spec, run_id="dag_run_1", settings=settings)
    challenger = client.get_model_version_by_alias(spec.model_name, "challenger").version
    return {"res": res, "again": again, "challenger": challenger}


@pytest.fixture(scope="module")
def promoted(registered, spec, settings):
    """The gate's verdict on dag_run_1 (no champion yet), then promote run twice.

    Every test that moves the champion depends on this fixture, so dag_run_1's version
    is the module's first champion whatever the test order."""
    verdict = gate.run(spec, run_id="dag_run_1", settings=settings)
    res = promote.run(spec, run_id="dag_run_1", settings=settings)
    again = promote.run(spec, run_id="dag_run_1", settings=settings)
    return {"verdict": verdict, "res": res, "again": again}


BROKEN_SPACE = {"learning_rate": {"type": "choice", "values": [-1.0]}}


@pytest.fixture(scope="module")
def failed_search(spec, settings, ray_up):
    """A search whose every trial fails (a learning rate HistGradientBoosting rejects)."""
    raw = spec.model_dump(mode="json")
    raw["model"]["search_space"] = BROKEN_SPACE
    raw["model"]["num_samples"] = 1
    broken = parse_spec(raw, spec.path)
    with pytest.raises(AirloopError, match="every tuning trial failed") as failure:
        train.run(broken, run_id="dag_run_bad", settings=settings, frame=synthetic_frame(spec))
    return failure.value


def _experiment_runs(client, spec):
    exp = client.get_experiment_by_name(tracking.experiment_name(spec))
    return client.search_runs([exp.experiment_id], max_results=1000)


def _dag_run_runs(client, spec, dag_run_id):
    exp = client.get_experiment_by_name(tracking.experiment_name(spec))
    return tracking.find_runs(client, exp.experiment_id, {tracking.TAG_DAG_RUN: dag_run_id})


def _expected_commit(settings) -> str:
    """The lineage a model must carry: ``settings.git_commit`` when set, else the HEAD
    of this checkout (the tests run from a git checkout, CI too)."""
    if settings.git_commit:
        return settings.git_commit
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", head), head
    return head


def _champion(client, spec) -> str:
    return client.get_model_version_by_alias(spec.model_name, "champion").version


def test_split_is_time_based(spec):
    frame = synthetic_frame(spec)
    split = split_frame(frame, spec)
    assert sum(split.rows().values()) == len(frame)
    assert split.train[spec.timestamp].max() <= split.valid[spec.timestamp].min()
    assert split.valid[spec.timestamp].max() < split.holdout[spec.timestamp].min()
    holdout_days = split.holdout[spec.timestamp].dt.floor("D").unique()
    assert len(holdout_days) == 2
    assert 0.15 < len(split.valid) / (len(split.train) + len(split.valid)) < 0.25
    early = frame[frame[spec.timestamp] < pd.Timestamp("2025-01-03", tz="UTC")]
    with pytest.raises(AirloopError, match="holdout_days=2"):
        split_frame(early, spec)


def test_train_logs_every_trial_under_one_parent(first, spec, settings, client):
    assert first["trials"] == SAMPLES
    assert first["metric_name"] == "roc_auc" and first["metric"] > 0.7
    assert set(first["best_params"]) == set(spec.model.search_space)
    assert first["rows"]["holdout"] > 0 and first["rows"]["train"] > first["rows"]["validation"]
    runs = _dag_run_runs(client, spec, "dag_run_1")
    parents = [r for r in runs if r.data.tags.get(tracking.TAG_ROLE) == "parent"]
    children = [r for r in runs if r.data.tags.get(tracking.TAG_ROLE) == "trial"]
    assert [p.info.run_id for p in parents] == [first["mlflow_run_id"]]
    assert len(children) == SAMPLES
    statuses = []
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == first["mlflow_run_id"]
        assert set(child.data.params) == set(spec.model.search_space)
        history = client.get_metric_history(child.info.run_id, "validation_roc_auc")
        steps = sorted(m.step for m in history)
        assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) <= MAX_IT
        status = child.data.tags["airloop.trial_status"]
        assert status == ("completed" if len(steps) == MAX_IT else "pruned")
        assert child.info.status == "FINISHED"
        assert child.data.tags["airloop.dag_run_id"] == "dag_run_1"
        assert child.data.tags["airloop.trial_id"] and "airloop.trial_error" not in child.data.tags
        values = [m.value for m in sorted(history, key=lambda m: m.step)]
        assert child.data.metrics["final_roc_auc"] == pytest.approx(values[-1])
        assert child.data.metrics["best_roc_auc"] == pytest.approx(max(values))
        assert child.data.metrics["iterations"] == len(steps)
        statuses.append(status)
    assert statuses.count("pruned") == first["pruned_trials"]
    assert "completed" in statuses

    parent = client.get_run(first["mlflow_run_id"])
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert tags["airloop.dag_run_id"] == "dag_run_1"
    assert tags["airloop.tenant"] == spec.tenant and tags["airloop.project"] == "churn"
    assert tags["airloop.trigger"] == "test"
    assert tags["airloop.feature_views"] == "customer_profile,customer_activity"
    assert tags["airloop.feature_service"] == "churn_v1"
    assert tags["airloop.data_version"]
    assert tags["airloop.git_commit"] == _expected_commit(settings)
    assert parent.data.metrics["holdout_roc_auc"] == pytest.approx(first["metric"])
    assert parent.data.metrics["trials"] == SAMPLES


def test_artifacts_and_model(first, spec, client, settings):
    run_id = first["mlflow_run_id"]
    with tempfile.TemporaryDirectory() as tmp:
        ref = pd.read_parquet(tracking.download(client, run_id, "reference/reference.parquet",
                                                Path(tmp)))
        hold = pd.read_parquet(tracking.download(client, run_id, "holdout/holdout.parquet",
                                                 Path(tmp)))
    assert list(ref.columns) == [*spec.feature_columns, "score", spec.label]
    assert len(ref) == first["rows"]["train"] + first["rows"]["validation"]
    assert ref["score"].between(0, 1).all()
    assert list(hold.columns) == [*spec.feature_columns, spec.label]
    assert len(hold) == first["rows"]["holdout"]

    import mlflow.pyfunc

    tracking.use(settings)
    model = mlflow.pyfunc.load_model(client.get_run(run_id).data.tags[tracking.TAG_MODEL_URI])
    proba = np.asarray(model.predict(hold[spec.feature_columns]))
    assert proba.shape == (len(hold), 2)
    from airloop.runtime.models import score

    assert score("roc_auc", hold[spec.label], proba[:, 1]) == pytest.approx(first["metric"])
    assert model.metadata.signature.inputs.input_names() == spec.feature_columns
    model_uri = client.get_run(run_id).data.tags[tracking.TAG_MODEL_URI]
    reqs = Path(mlflow.pyfunc.get_model_dependencies(model_uri))
    pins = [line for line in reqs.read_text().splitlines() if line and not line.startswith("-")]
    assert sorted(pins) == sorted(tracking.pip_requirements())
    assert all("==" in pin for pin in pins)


def test_rerun_with_same_run_id_trains_nothing(first, spec, settings, client):
    before = len(_experiment_runs(client, spec))
    again = train.run(spec, run_id="dag_run_1", settings=settings,
                      frame=synthetic_frame(spec, seed=5))
    assert again == first
    # without a frame, run() finds it before reading any features (Feast has none here)
    assert train.run(spec, run_id="dag_run_1", settings=settings) == first
    assert len(_experiment_runs(client, spec)) == before


def test_register_is_idempotent_and_tags_lineage(first, registered, spec, settings, client):
    with pytest.raises(AirloopError, match="run the train step first"):
        register.run(spec, run_id="no_such_run", settings=settings)
    res, again = registered["res"], registered["again"]
    assert res["created"] is True and res["model"] == spec.model_name
    assert again["created"] is False and again["version"] == res["version"]
    versions = client.search_model_versions(f"name = '{spec.model_name}'")
    assert [v.version for v in versions if v.tags.get("airloop.dag_run_id") == "dag_run_1"] \
        == [res["version"]]
    assert registered["challenger"] == res["version"]
    v = client.get_model_version(spec.model_name, res["version"])
    assert v.run_id == first["mlflow_run_id"]
    assert v.tags["airloop.git_commit"] == _expected_commit(settings)
    for key in ("airloop.data_version", "airloop.feature_views",
                "airloop.feature_service", "airloop.dag_run_id", "airloop.metric_name",
                "airloop.metric_value", "airloop.trigger"):
        assert v.tags.get(key), key
    assert float(v.tags["airloop.metric_value"]) == pytest.approx(first["metric"])


def test_gate_promotes_first_model_and_promote_sets_champion(registered, promoted, spec,
                                                             settings, client):
    with pytest.raises(AirloopError, match="no registered version"):
        gate.run(spec, run_id="no_such_run", settings=settings)
    verdict = promoted["verdict"]
    assert verdict["promote"] is True, verdict["reason"]
    assert verdict["champion_version"] is None and verdict["champion_metric"] is None
    assert verdict["challenger_metric"] > 0.6
    assert verdict["challenger_version"] == registered["res"]["version"]
    tags = client.get_model_version(spec.model_name, verdict["challenger_version"]).tags
    assert tags["airloop.gate.promote"] == "true"
    assert gate.run(spec, run_id="dag_run_1", settings=settings) == verdict

    res, again = promoted["res"], promoted["again"]
    assert res["champion_version"] == verdict["challenger_version"]
    assert res["previous_version"] is None
    assert again["champion_version"] == res["champion_version"] and again["changed"] is False


def test_worse_challenger_is_rejected(registered, promoted, spec, settings, client, ray_up,
                                      monkeypatch):
    small = _variant(spec, num_samples=1, max_iterations=3, grace_period=1)
    checks = []  # the idempotency check of a new DAG run runs once
    lookup = train.parent.previous_result
    monkeypatch.setattr(train.parent, "previous_result",
                        lambda *args: checks.append(args[-1]) or lookup(*args))
    bad = train.run(small, run_id="dag_run_2", settings=settings,
                    frame=synthetic_frame(spec, shuffle_labels=True))
    assert checks == ["dag_run_2"]
    champion = _champion(client, spec)  # dag_run_1's, or dag_run_3's if that test ran first
    reg = register.run(spec, run_id="dag_run_2", settings=settings)
    assert reg["created"] is True and reg["version"] != registered["res"]["version"]
    verdict = gate.run(spec, run_id="dag_run_2", settings=settings)
    assert verdict["promote"] is False
    assert verdict["champion_version"] == champion
    assert verdict["challenger_metric"] < verdict["champion_metric"] - 0.1
    assert "challenger roc_auc=" in verdict["reason"]
    assert verdict["challenger_metric"] == pytest.approx(bad["metric"])
    with pytest.raises(AirloopError, match="rejected by the gate"):
        promote.run(spec, run_id="dag_run_2", settings=settings)
    assert _champion(client, spec) == champion


def test_equal_or_better_challenger_moves_aliases(registered, promoted, spec, settings, client,
                                                  ray_up):
    # A one-trial search on the same data; the gate tolerates a small loss here
    # (min_improvement -0.1), so the verdict is a pass unless the model is broken.
    small = _variant(spec, num_samples=1, max_iterations=3, grace_period=1,
                     promotion={"min_metric": 0.6, "min_improvement": -0.1})
    train.run(small, run_id="dag_run_3", settings=settings, frame=synthetic_frame(spec))
    first_version = registered["res"]["version"]  # the champion: dag_run_2's is never promoted
    reg = register.run(small, run_id="dag_run_3", settings=settings)
    verdict = gate.run(small, run_id="dag_run_3", settings=settings)
    assert verdict["promote"] is True, verdict["reason"]
    assert verdict["champion_version"] == first_version
    res = promote.run(small, run_id="dag_run_3", settings=settings)
    assert res == {"champion_version": reg["version"], "previous_version": first_version,
                   "changed": True}
    assert _champion(client, spec) == reg["version"]
    assert client.get_model_version_by_alias(spec.model_name, "previous").version == first_version


def test_failed_search_ends_its_runs_failed(failed_search, spec, client):
    runs = _dag_run_runs(client, spec, "dag_run_bad")
    assert {r.data.tags[tracking.TAG_ROLE] for r in runs} == {"parent", "trial"}
    assert {r.info.status for r in runs} == {"FAILED"}
    trial, = [r for r in runs if r.data.tags[tracking.TAG_ROLE] == "trial"]
    assert trial.data.tags["airloop.trial_status"] == "error"
    assert "learning_rate" in trial.data.tags["airloop.trial_error"]
    assert trial.data.tags["airloop.trial_error"] in str(failed_search)


def test_no_run_left_running(first, failed_search, spec, client):
    runs = _experiment_runs(client, spec)
    assert runs and not [r.info.run_id for r in runs if r.info.status == "RUNNING"]


@pytest.mark.parametrize("max_t,grace,factor", [(40, 5, 3), (40, 5, 2), (45, 5, 3), (10, 1, 2.5),
                                                (40, 40, 3), (7, 2, 4)])
def test_report_points_are_ashas_milestones(max_t, grace, factor):
    """Trials report only where ASHA decides: its rung milestones (read from Ray's own
    scheduler) rounded up to whole iterations, plus the last iteration."""
    import math

    from ray.tune.schedulers import ASHAScheduler

    sched = ASHAScheduler(time_attr=ITERATIONS, max_t=max_t, grace_period=grace,
                          reduction_factor=factor, metric="m", mode="max")
    milestones = {math.ceil(m) for m, _ in sched._brackets[0]._rungs}
    expected = sorted({m for m in milestones if m < max_t} | {max_t})
    assert report_points(max_t, grace, factor) == expected
