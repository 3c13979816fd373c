"""Names derived from a tenant, a project or a run, defined once for every plane.

The Helm chart uses the same rules (its templates cannot import Python; a control test
checks that the chart agrees with :data:`LABEL_DOMAIN` and :func:`tenant_namespace`).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

#: Domain of airloop's own Kubernetes labels (``airloop.io/tenant`` …).
LABEL_DOMAIN = "airloop.io"
#: Default prefix of a tenant's Kubernetes namespace (``airloop-<tenant>``).
NAMESPACE_PREFIX = "airloop-"
#: Unix socket paths are limited to 107 bytes and Ray nests up to ~60 bytes of its
#: own below its temp dir (``session_<date>_<pid>/sockets/plasma_store``).
RAY_TEMP_DIR_MAX = 40


def label(name: str) -> str:
    """``airloop.io/<name>``."""
    return f"{LABEL_DOMAIN}/{name}"


def tenant_namespace(tenant: str, prefix: str = NAMESPACE_PREFIX) -> str:
    """The tenant's Kubernetes namespace (DNS-1123: underscores become dashes)."""
    return f"{prefix}{tenant}".replace("_", "-")


def safe_run_id(run_id: str) -> str:
    """A DAG run id made safe for file names, tags and Kubernetes labels."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)[:200]


def ray_temp_dir(home: Path) -> Path:
    """Ray's session folder for a platform home: ``<home>/ray``, or a short path under
    the system temp folder keyed by the home when that would be too long for Ray's
    Unix sockets (see :data:`RAY_TEMP_DIR_MAX`)."""
    preferred = Path(home) / "ray"
    if len(str(preferred)) <= RAY_TEMP_DIR_MAX:
        return preferred
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"airloop-ray-{digest}"
