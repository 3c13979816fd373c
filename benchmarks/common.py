"""Shared measurement helpers: rows, goals, timers, HTTP clients, processes, memory.

Every benchmark module exposes ``run(workdir: Path) -> dict`` returning
``{"rows": [Row...], "goals": [Goal...]}`` as plain dicts (see :func:`result`).
A path that cannot run is a row with ``values=[]`` and ``note="not measured: <why>"``,
never a made-up number. Standard library only (numpy-free) so any venv can import it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import threading
import time
import traceback
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
VENVS = Path(os.environ.get("AIRLOOP_VENVS", REPO / ".venvs"))

from airloop.core.settings import NO_TELEMETRY  # noqa: E402  (one list of switches)


@dataclass
class Row:
    """One measured path. ``role`` is airloop | peer | floor; ``values`` are samples."""

    comparison: str
    case: str
    path: str
    role: str
    metric: str
    unit: str
    values: list[float] = field(default_factory=list)
    note: str = ""
    lower_is_better: bool = True

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


@dataclass
class Goal:
    comparison: str
    goal: str
    measured: str
    met: bool | None  # None: could not be judged (a path was not measured)


def not_measured(comparison: str, case: str, path: str, role: str, why: str) -> Row:
    return Row(comparison, case, path, role, "-", "-", [], f"not measured: {why}")


def result(rows: list[Row], goals: list[Goal]) -> dict:
    return {"rows": [asdict(r) for r in rows], "goals": [asdict(g) for g in goals]}


def why(exc: BaseException) -> str:
    """One line naming the failure (for 'not measured' notes)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- timers ---------------------------------------------------------------------------
def time_calls(fn: Callable[[], Any], n: int, warmup: int = 20) -> list[float]:
    """Latency in milliseconds of ``n`` sequential calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) * 1000.0)
    return out


def latency_rounds(fn: Callable[[], Any], rounds: int, n: int, warmup: int = 20):
    """``rounds`` rounds of ``n`` calls: per-round p50 and p99 (ms) for the spread."""
    p50, p99 = [], []
    for r in range(rounds):
        lat = time_calls(fn, n, warmup if r == 0 else 3)
        p50.append(pct(lat, 50))
        p99.append(pct(lat, 99))
    return p50, p99


def throughput(make_call: Callable[[], Callable[[], Any]], concurrency: int, requests: int,
               rounds: int) -> list[float]:
    """Requests/s of ``requests`` calls spread over ``concurrency`` threads, per round.

    ``make_call`` builds one callable per thread (e.g. holding a keep-alive connection).
    The pool is bounded; every call must succeed (an exception aborts the round)."""
    out = []
    for _ in range(rounds):
        local = threading.local()

        def one(_i: int) -> None:
            call = getattr(local, "call", None)
            if call is None:
                call = local.call = make_call()
            call()

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(concurrency * 2)))  # connect + warm every thread
            t0 = time.perf_counter()
            list(pool.map(one, range(requests)))
            out.append(requests / (time.perf_counter() - t0))
    return out


# -- HTTP -------------------------------------------------------------------------------
class HttpClient:
    """A keep-alive JSON POST client (one connection; one per thread for concurrency)."""

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urllib.request.urlparse(url)
        self.host, self.port = parts.hostname, parts.port
        self.path = parts.path or "/"
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, path: str | None = None,
             content_type: str = "application/json") -> bytes:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.connect()
                self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.conn.request("POST", path or self.path, body,
                                  {"Content-Type": content_type})
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            if resp.status >= 400:
                raise RuntimeError(f"POST {self.path} -> {resp.status}: {data[:300]!r}")
            return data
        raise RuntimeError("unreachable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> float:
    """Wait until ``url`` answers 2xx; returns seconds waited; fails early if ``proc`` died."""
    t0 = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:] if log and log.exists() else ""
            raise RuntimeError(f"process for {url} exited with {proc.returncode}: {tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return time.monotonic() - t0
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s: {last}")


def venv(env: str, tool: str = "python") -> str:
    return str(VENVS / env / "bin" / tool)


def spawn(argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "wb")
    proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **NO_TELEMETRY, **(env or {})},
                            cwd=str(cwd) if cwd else None, start_new_session=True)
    proc._bench_log = fh  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Terminate a process started by :func:`spawn` and its process group."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    fh = getattr(proc, "_bench_log", None)
    if fh:
        fh.close()


# -- memory -----------------------------------------------------------------------------
def pss_kib(pid: int) -> int | None:
    """Proportional set size of one process (``/proc/<pid>/smaps_rollup``), KiB."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc, no psutil needed)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_pss_mib(pid: int) -> float | None:
    vals = [pss_kib(p) for p in tree_pids(pid)]
    vals = [v for v in vals if v is not None]
    return sum(vals) / 1024.0 if vals else None


# -- module entry -----------------------------------------------------------------------
_CHECKPOINT: Path | None = None


def checkpoint(rows: list[Row], goals: list[Goal]) -> None:
    """Write what is measured so far: a comparison stopped by its time limit keeps it."""
    if _CHECKPOINT is not None:
        _CHECKPOINT.write_text(json.dumps(result(rows, goals), indent=1, default=float))


def main(run: Callable[[Path], dict]) -> None:
    """``python -m benchmarks.<module> --workdir D --out F.json``: run and write JSON."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)
    global _CHECKPOINT
    _CHECKPOINT = args.out
    try:
        doc = run(args.workdir)
    except Exception:
        traceback.print_exc()
        raise
    args.out.write_text(json.dumps(doc, indent=1, default=float))
