"""Secrets and credentials of the local Airflow (SimpleAuthManager).

Generated once under ``$AIRLOOP_HOME/airflow`` with mode 0600 and reused on every
``airloop up``: the admin passwords file, and one JWT secret / API secret key /
Fernet key shared by every Airflow component (a mismatch breaks task execution).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

from airloop.core.errors import AirloopError
from airloop.core.io import write_json
from airloop.core.settings import Settings

ADMIN_USER = "admin"


def airflow_home(settings: Settings) -> Path:
    return settings.home / "airflow"


def passwords_file(settings: Settings) -> Path:
    return airflow_home(settings) / "simple_auth_manager_passwords.json"


def secrets_file(settings: Settings) -> Path:
    return airflow_home(settings) / "secrets.json"


def ensure_secrets(settings: Settings) -> dict:
    """Create (once) and return ``{"jwt_secret", "secret_key", "fernet_key"}``.

    Idempotent: an existing file is kept; missing keys are added."""
    path = secrets_file(settings)
    data = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    if len(data.get("jwt_secret", "")) < 64:
        data["jwt_secret"] = secrets.token_urlsafe(64)  # 86 chars, 512 bits
        changed = True
    if not data.get("secret_key"):
        data["secret_key"] = secrets.token_urlsafe(32)
        changed = True
    if not data.get("fernet_key"):
        data["fernet_key"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
        changed = True
    if changed or (path.stat().st_mode & 0o777) != 0o600:
        write_json(path, data, mode=0o600)
    return data


def ensure_admin_password(settings: Settings) -> str:
    """Create (once) the SimpleAuthManager passwords file and return admin's password."""
    path = passwords_file(settings)
    data = json.loads(path.read_text()) if path.exists() else {}
    if not data.get(ADMIN_USER):
        data[ADMIN_USER] = secrets.token_urlsafe(12)
        write_json(path, data, mode=0o600)
    elif (path.stat().st_mode & 0o777) != 0o600:
        os.chmod(path, 0o600)
    return data[ADMIN_USER]


def admin_credentials(settings: Settings) -> tuple[str, str]:
    """Return ``(user, password)`` of the local Airflow admin.

    Raises AirloopError when the platform was never started under this home."""
    path = passwords_file(settings)
    try:
        return ADMIN_USER, json.loads(path.read_text())[ADMIN_USER]
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
        raise AirloopError(f"no Airflow admin password in {path}; run `airloop up` first") from exc

