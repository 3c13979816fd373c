"""Small helpers shared by every test tier (standard library only)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENVS = Path(os.environ.get("AIRLOOP_VENVS", REPO / ".venvs"))
#: The bundled demo project specs.
PROJECTS = REPO / "include" / "projects"


def venv_bin(env: str, tool: str) -> str:
    return str(VENVS / env / "bin" / tool)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 2xx; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def churn_project(base: Path, mp, tenant_prefix: str = "t"):
    """The demo churn spec under a unique tenant (so a unique Feast project and Redis
    keys), in a private home and projects dir under ``base``; ``mp`` is a pytest
    MonkeyPatch. Returns ``(spec, settings)``."""
    import uuid

    import yaml

    from airloop.core import settings as config
    from airloop.core.spec import load_spec

    raw = yaml.safe_load((REPO / "include" / "projects" / "churn.yaml").read_text())
    raw["tenant"] = f"{tenant_prefix}{uuid.uuid4().hex[:8]}"
    (base / "projects").mkdir()
    (base / "projects" / "churn.yaml").write_text(yaml.safe_dump(raw))
    mp.setenv("AIRLOOP_HOME", str(base / "home"))
    mp.setenv("AIRLOOP_PROJECTS_DIR", str(base / "projects"))
    settings = config.load()
    return load_spec("churn", settings.projects_dir), settings
