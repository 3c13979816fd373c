"""Run every comparison side by side and write ``benchmarks/results/``.

Each comparison module runs in its own process (the runtime venv: Feast, MLflow, Ray,
Evidently, SciPy; servers are started from their own venvs) with a time limit, so one
failure or one heavy import cannot distort the others. A module that fails becomes a
"not measured: <why>" row. Output: ``RESULTS.md`` (medians, min-max spread, ratios,
goals met, machine and environment), ``results.json`` and PNG plots.

    python -m benchmarks.run [--only prediction,features] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import NO_TELEMETRY, REPO, Row, median, venv

#: (module, title, time limit in seconds) in run order.
MODULES = [
    ("prediction", "1. Prediction over HTTP", 1200),
    ("features", "2. Online features", 600),
    ("tuning", "4. Tuning: ASHA vs all trials to completion", 600),
    ("drift", "5. Drift check (100k x 20)", 300),
    ("materialize", "6. Materialization offline -> online", 420),
    ("platform_bench", "3 + 7. Orchestration and footprint of `airloop up` (local, PostgreSQL)", 900),
]

PACKAGES = {
    "runtime": ["mlflow", "feast", "ray", "evidently", "scikit-learn", "pandas", "numpy",
                "scipy", "redis"],
    "serving": ["mlserver", "mlserver-mlflow", "mlflow", "scikit-learn", "uvloop"],
    "control": ["apache-airflow", "pgserver", "psycopg2-binary", "psycopg2"],
}


def machine() -> dict:
    mem = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            mem[key] = int(value.split()[0]) / 1024 / 1024
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    envs = {}
    for env, pkgs in PACKAGES.items():
        code = ("import sys, json, importlib.metadata as m\n"
                "out = {'python': sys.version.split()[0]}\n"
                f"for p in {pkgs!r}:\n"
                "    try: out[p] = m.version(p)\n"
                "    except m.PackageNotFoundError: pass\n"
                "print(json.dumps(out))")
        try:
            envs[env] = json.loads(subprocess.run([venv(env), "-c", code], capture_output=True,
                                                  text=True, timeout=60).stdout)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            envs[env] = {"error": str(exc)}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {
        "cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem.get("MemTotal", 0), 1),
        "memory_available_gib": round(mem.get("MemAvailable", 0), 1),
        "load_average": os.getloadavg(), "kernel": platform.release(),
        "os": platform.platform(), "envs": envs, "commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_module(name: str, limit: int, workdir: Path) -> tuple[dict, float]:
    out = workdir / f"{name}.json"
    log = workdir / f"{name}.log"
    env = {**os.environ, **NO_TELEMETRY, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([venv("runtime"), "-m", f"benchmarks.{name}", "--workdir",
                                 str(workdir / name), "--out", str(out)], cwd=str(REPO), env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(limit)
        except subprocess.TimeoutExpired:
            import signal

            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    elapsed = time.monotonic() - t0
    if rc == 0 and out.exists():
        return json.loads(out.read_text()), elapsed
    if rc is None and out.exists():  # partial results checkpointed before the time limit
        doc = json.loads(out.read_text())
        doc["rows"].append(Row(name, "-", "remaining paths", "-", "-", "-", [],
                               f"not measured: time limit of {limit}s reached").__dict__)
        return doc, elapsed
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    reason = f"timed out after {limit}s" if rc is None else (tail[-1] if tail else f"exit {rc}")
    row = Row(name, "-", "whole comparison", "-", "-", "-", [], f"not measured: {reason[:300]}")
    return {"rows": [row.__dict__], "goals": []}, elapsed


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"


def table(rows: list[dict]) -> list[str]:
    floors = {(r["case"], r["metric"]): median(r["values"]) for r in rows
              if r["role"] == "floor" and r["values"]}
    out = ["| case | path | role | metric | median | min – max | n | × floor | note |",
           "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        vals = r["values"]
        m = median(vals)
        spread = f"{fmt(min(vals))} – {fmt(max(vals))}" if len(vals) > 1 else "-"
        f = floors.get((r["case"], r["metric"]))
        ratio = f"{m / f:.2f}" if m is not None and f and r["role"] != "floor" else "-"
        unit = f" {r['unit']}" if vals else ""
        out.append(f"| {r['case']} | {r['path']} | {r['role']} | {r['metric']} | "
                   f"{fmt(m)}{unit} | {spread} | {len(vals) or '-'} | {ratio} | {r['note']} |")
    return out


def write_markdown(path: Path, info: dict, sections: list[tuple[str, str, dict, float]],
                   plots: list[str], total: float) -> None:
    lines = ["# airloop benchmarks", "",
             f"Generated by `make bench` on {info['date']} (commit {info['commit']}), "
             f"total {total / 60:.1f} min. Each comparison ran in one process, its paths side "
             "by side on the same model, data and machine; loopback only. "
             "`median` is the median of the samples (rounds), `min – max` their spread, "
             "`× floor` the median over the floor's median for the same case and metric.",
             *([f"Merged run: {info['merged']}."] if info.get("merged") else []), "",
             "## Machine", "",
             f"- {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB memory "
             f"({info['memory_available_gib']} GiB available at start), "
             f"load average at start {', '.join(f'{x:.2f}' for x in info['load_average'])}",
             f"- {info['os']}"]
    for env, versions in info["envs"].items():
        lines.append(f"- `.venvs/{env}`: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines += ["", "## Goals", "", "| comparison | goal | measured | met |", "|---|---|---|---|"]
    for _, title, doc, _ in sections:
        for g in doc["goals"]:
            met = {True: "yes", False: "**no**", None: "not judged"}[g["met"]]
            lines.append(f"| {title} | {g['goal']} | {g['measured']} | {met} |")
    for name, title, doc, elapsed in sections:
        lines += ["", f"## {title}", "", f"(ran {elapsed:.0f} s)", "", *table(doc["rows"])]
        for p in plots:
            if p.startswith(name):
                lines += ["", f"![{title}]({p})"]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated module names")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other comparisons of an earlier results.json in --out")
    args = parser.parse_args(argv)
    only = {x for x in args.only.split(",") if x}
    unknown = only - {m for m, _, _ in MODULES}
    if unknown:
        print(f"error: unknown benchmark(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    info = machine()
    print(json.dumps(info, indent=1), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="airloop-bench-"))
    sections = []
    t0 = time.monotonic()
    try:
        for name, title, limit in MODULES:
            if only and name not in only:
                continue
            print(f"== {title} ...", flush=True)
            doc, elapsed = run_module(name, limit, workdir)
            for r in doc["rows"]:
                m = median(r["values"])
                print(f"   {r['case']:<28} {r['path']:<52} {r['metric']:<16} "
                      f"{fmt(m):>9} {r['unit'] if m is not None else ''} {r['note']}", flush=True)
            for g in doc["goals"]:
                print(f"   goal: {g['goal']}: {g['measured']} -> {g['met']}", flush=True)
            sections.append((name, title, doc, elapsed))
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "results.json"
    if args.merge and previous.exists():
        # Re-run comparisons replace their section; the others are kept as measured.
        old = json.loads(previous.read_text())
        fresh = {name for name, _, _, _ in sections}
        kept = [(n, t, old["sections"][n], old.get("elapsed", {}).get(n, 0.0))
                for n, t, _ in MODULES if n not in fresh and n in old.get("sections", {})]
        total += sum(e for _, _, _, e in kept)
        order = [n for n, _, _ in MODULES]
        sections = sorted(sections + kept, key=lambda sec: order.index(sec[0]))
        info["merged"] = f"{', '.join(sorted(fresh))} re-run at {info['date']}; others from {old['machine']['date']}"
    from benchmarks.plots import plot_all

    plots = plot_all({name: doc for name, _, doc, _ in sections}, args.out)
    (args.out / "results.json").write_text(json.dumps(
        {"machine": info, "sections": {n: d for n, _, d, _ in sections},
         "elapsed": {n: e for n, _, _, e in sections}}, indent=1))
    write_markdown(args.out / "RESULTS.md", info, sections, plots, total)
    print(f"wrote {args.out / 'RESULTS.md'} ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
