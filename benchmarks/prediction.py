"""Comparison 1: prediction over HTTP, 1 row and 100 rows.

One registered MLflow model (the demo spec's features, a scikit-learn pipeline), served
side by side on loopback by:

* airloop's endpoint: MLServer + ``AirloopRuntime`` with request logging on, loaded
  through the deploy step's repository API (serving venv);
* MLServer with the stock ``mlserver_mlflow`` runtime (reference: what airloop adds);
* ``mlflow models serve --env-manager local`` (the peer, runtime venv, 1 worker);
* in-process ``pyfunc.predict`` (the floor; raw ``sklearn.predict_proba`` shown too).

The model is logged with ``pyfunc_predict_fn="predict_proba"`` as the train step does, so
every server returns probabilities.

Sequential p50/p99 over keep-alive connections, then throughput at concurrency 16
(a bounded thread pool, one keep-alive connection per thread). The entity-only request
(features joined from the online store) is measured too: its cost minus predict is
airloop's HTTP feature path (comparison 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.common import (Goal, HttpClient, Row, checkpoint, free_port, latency_rounds,
                               main, median, not_measured, result, spawn, stop, throughput,
                               venv, wait_http, why)

CMP = "1 prediction"
SIZES = (1, 100)
ROUNDS, N_SEQ = 3, 60
CONCURRENCY, N_CONC, CONC_ROUNDS = 16, 160, 3


def train_and_register(workdir: Path, model_name: str):
    """Train the pipeline on synthetic churn data; register it; returns
    ``(tracking_uri, model_uri, frame_of_features, pyfunc_model, sklearn_model)``."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    from benchmarks.data import churn_frame, spec

    s = spec()
    frame = churn_frame(20_000, seed=11)
    cols = s.feature_columns
    cats = [c.name for c in s.columns if c.allowed and c.name in cols]
    pipe = Pipeline([
        ("enc", ColumnTransformer([("cat", OrdinalEncoder(handle_unknown="use_encoded_value",
                                                          unknown_value=-1), cats)],
                                  remainder="passthrough")),
        ("clf", HistGradientBoostingClassifier(max_iter=40, random_state=0)),
    ])
    X = frame[cols]
    pipe.fit(X, frame[s.label])
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    exp = mlflow.create_experiment("bench", artifact_location=str(workdir / "mlartifacts"))
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.sklearn.log_model(
            pipe, name="model",
            signature=infer_signature(X.head(100), pipe.predict_proba(X.head(100))),
            pyfunc_predict_fn="predict_proba",
            input_example=None, registered_model_name=model_name,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            pip_requirements=["scikit-learn==1.9.1", "pandas==2.3.3", "mlflow==3.17.2"],
        )
    version = info.registered_model_version
    return (tracking, version, f"models:/{model_name}/{version}", X,
            mlflow.pyfunc.load_model(info.model_uri), pipe)


def v2_body(frame, rid: str = "bench") -> bytes:
    """The same V2 request the demo sends (one input per column)."""
    from airloop.demo.loop import v2_request

    return json.dumps(v2_request(frame, rid)).encode()


def mlflow_body(frame) -> bytes:
    return json.dumps({"dataframe_split": {"columns": list(frame.columns),
                                           "data": frame.values.tolist()}}).encode()


def _measure_http(rows, case_rows, path, role, url, body) -> dict:
    client = HttpClient(url)
    client.post(body)
    p50, p99 = latency_rounds(lambda: client.post(body), ROUNDS, N_SEQ)
    case = f"{case_rows} row{'s' if case_rows > 1 else ''}"
    rows.append(Row(CMP, case, path, role, "p50", "ms", p50))
    rows.append(Row(CMP, case, path, role, "p99", "ms", p99))

    def make():
        c = HttpClient(url)
        return lambda: c.post(body)

    rps = throughput(make, CONCURRENCY, N_CONC, CONC_ROUNDS)
    rows.append(Row(CMP, case, path, role, f"throughput @{CONCURRENCY}", "req/s", rps,
                    lower_is_better=False))
    return {"p50": median(p50), "rps": median(rps)}


def paired(full, entity) -> tuple[list[float], list[float]]:
    """Interleaved full-row and entity-only requests: per round, the entity-only p50
    and the median of paired differences (entity-only minus full-row), in ms."""
    import time

    clock = time.perf_counter
    p50s, diffs = [], []
    for _ in range(ROUNDS):
        lat, d = [], []
        for _ in range(N_SEQ):
            t0 = clock()
            full()
            t1 = clock()
            entity()
            t2 = clock()
            lat.append((t2 - t1) * 1000)
            d.append(((t2 - t1) - (t1 - t0)) * 1000)
        p50s.append(median(lat))
        diffs.append(median(d))
    return p50s, diffs


def _stock_mlserver(workdir: Path, model_path: str):
    """MLServer with the stock MLflow runtime on the same model files."""
    repo = workdir / "mlserver-stock"
    (repo / "churn").mkdir(parents=True, exist_ok=True)
    port = free_port()
    (repo / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "parallel_workers": 0, "load_models_at_startup": True,
        "metrics_dir": str(workdir / "mlserver-stock-metrics")}))
    (repo / "churn" / "model-settings.json").write_text(json.dumps({
        "name": "churn", "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": model_path}}))
    log = workdir / "mlserver-stock.log"
    proc = spawn([venv("serving", "mlserver"), "start", str(repo)], log)
    wait_http(f"http://127.0.0.1:{port}/v2/models/churn/ready", 180, proc, log)
    return proc, f"http://127.0.0.1:{port}/v2/models/churn/infer"


def run(workdir: Path) -> dict:
    import mlflow

    from benchmarks import airloop_api
    from benchmarks.data import churn_frame, spec
    from benchmarks.feast_repo import build_store

    rows: list[Row] = []
    goals: list[Goal] = []
    s = spec()
    tracking, version, model_uri, X, pyfunc_model, sk = train_and_register(workdir, s.model_name)
    local_path = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(workdir / "model"))
    frames = {n: X.head(n).reset_index(drop=True) for n in SIZES}
    # The online store where the deployed runtime looks (the project's layout).
    settings, runtime_extra = airloop_api.serving_settings(workdir / "home")
    extra = runtime_extra(s, settings, version)
    population = churn_frame(1_000, seed=4)
    store, _, _ = build_store(Path(extra["online_store"]).parent, population,
                              project=extra["feast_project"])
    for view in s.features.views:
        store.write_to_online_store(
            view.name, population[[s.entity_key, s.timestamp, *view.features]])
    floor = {}
    for n in SIZES:
        case = f"{n} row{'s' if n > 1 else ''}"
        p50, p99 = latency_rounds(lambda: pyfunc_model.predict(frames[n]), ROUNDS, N_SEQ)
        rows.append(Row(CMP, case, "in-process pyfunc.predict", "floor", "p50", "ms", p50,
                        f"p99 {median(p99):.3f} ms"))
        floor[n] = median(p50)
        p50, _ = latency_rounds(lambda: sk.predict_proba(frames[n]), ROUNDS, N_SEQ)
        rows.append(Row(CMP, case, "in-process sklearn.predict_proba", "floor", "p50", "ms", p50))

    checkpoint(rows, goals)
    # airloop's endpoint -----------------------------------------------------------------
    ours: dict[int, dict] = {}
    endpoint = None
    try:
        os.environ["MLFLOW_TRACKING_URI"] = tracking  # deploy downloads from the registry
        endpoint = airloop_api.start_endpoint(settings, s, model_uri, version)
        for n in SIZES:
            ours[n] = _measure_http(rows, n, "airloop (MLServer + AirloopRuntime, logging on)",
                                    "airloop", endpoint.infer_url, v2_body(frames[n]))
        if endpoint.entity_body is not None:
            for n in SIZES:
                case = f"{n} row{'s' if n > 1 else ''}"
                full, ent = HttpClient(endpoint.infer_url), HttpClient(endpoint.infer_url)
                fbody, ebody = v2_body(frames[n]), endpoint.entity_body(list(range(1, n + 1)))
                p50_ent, diffs = paired(lambda: full.post(fbody), lambda: ent.post(ebody))
                rows.append(Row(CMP, case, "airloop entity-only request (features joined)",
                                "airloop", "p50", "ms", p50_ent))
                rows.append(Row("2 online features", f"sqlite, {n} entit{'y' if n == 1 else 'ies'}",
                                "airloop over HTTP (entity-only minus full-row request)",
                                "airloop", "p50", "ms", diffs,
                                "median of paired differences, requests interleaved"))
                extra = median(diffs)
                goals.append(Goal("2 online features", f"HTTP p50 <= 1 ms ({n} entities)",
                                  f"{extra:.3f} ms added by the feature join", extra <= 1.0))
    except Exception as exc:
        reason = why(exc)
        for n in SIZES:
            rows.append(not_measured(CMP, f"{n} row{'s' if n > 1 else ''}",
                                     "airloop (MLServer + AirloopRuntime, logging on)",
                                     "airloop", reason))
        rows.append(not_measured("2 online features", "sqlite", "airloop over HTTP", "airloop",
                                 reason))
    finally:
        if endpoint is not None:
            endpoint.stop()
    if endpoint is not None and endpoint.predictions is not None:
        logged = sum(sum(1 for _ in f.open()) for f in endpoint.predictions.glob("*.jsonl"))
        for r in rows:
            if r.role == "airloop" and r.comparison == CMP and r.metric == "p50":
                r.note = f"prediction log on: {logged} rows written during the run"

    checkpoint(rows, goals)
    # stock MLServer --------------------------------------------------------------------
    proc = None
    try:
        proc, url = _stock_mlserver(workdir, local_path)
        for n in SIZES:
            _measure_http(rows, n, "MLServer + stock mlserver_mlflow runtime", "peer", url,
                          v2_body(frames[n]))
    except Exception as exc:
        rows.append(not_measured(CMP, "all", "MLServer + stock mlserver_mlflow runtime", "peer",
                                 why(exc)))
    finally:
        if proc is not None:
            stop(proc)

    checkpoint(rows, goals)
    # mlflow models serve ---------------------------------------------------------------
    peer: dict[int, dict] = {}
    port = free_port()
    log = workdir / "mlflow-serve.log"
    proc = spawn([venv("runtime", "mlflow"), "models", "serve", "-m", model_uri,
                  "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], log,
                 # it execs `uvicorn` from PATH: the runtime venv's bin first
                 env={"MLFLOW_TRACKING_URI": tracking,
                      "PATH": f"{Path(venv('runtime')).parent}:{os.environ.get('PATH', '')}"})
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 180, proc, log)
        for n in SIZES:
            peer[n] = _measure_http(rows, n, "mlflow models serve (--env-manager local)",
                                    "peer", f"http://127.0.0.1:{port}/invocations",
                                    mlflow_body(frames[n]))
    except Exception as exc:
        rows.append(not_measured(CMP, "all", "mlflow models serve", "peer", why(exc)))
    finally:
        stop(proc)

    for n in SIZES:
        if n in ours:
            goals.append(Goal(CMP, f"p50 <= predict + 2 ms ({n} rows)",
                              f"{ours[n]['p50']:.2f} ms vs {floor[n]:.2f} + 2 ms",
                              ours[n]["p50"] <= floor[n] + 2.0))
            if n in peer:
                ratio = ours[n]["rps"] / peer[n]["rps"]
                goals.append(Goal(CMP, f"throughput >= 2x mlflow serve ({n} rows)",
                                  f"{ratio:.2f}x ({ours[n]['rps']:.0f} vs {peer[n]['rps']:.0f} req/s)",
                                  ratio >= 2.0))
        else:
            goals.append(Goal(CMP, f"p50 / throughput goals ({n} rows)",
                              "airloop endpoint not measured", None))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return result(rows, goals)


if __name__ == "__main__":
    main(run)
