# Control-plane image: Airflow 3 + the cncf.kubernetes provider + airloop's DAGs,
# plugins and package. Installs exactly requirements/control.lock (the same lock as the
# local .venvs/control), then airloop itself with --no-deps.
# Build from the repository root: docker build -f docker/airflow.Dockerfile -t airloop-airflow .
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__ANALYTICS_ENABLED=False \
    SCARF_ANALYTICS=false \
    DO_NOT_TRACK=true \
    AIRLOOP_MODE=kubernetes

# uid/gid 50000 like the official apache/airflow image, so the official chart's
# securityContext defaults (runAsUser 50000, fsGroup 0) apply unchanged.
RUN groupadd --gid 50000 airflow \
    && useradd --uid 50000 --gid 50000 --home-dir /opt/airflow --create-home --shell /usr/sbin/nologin airflow

COPY requirements/control.lock /tmp/control.lock
RUN pip install --no-cache-dir -r /tmp/control.lock && rm /tmp/control.lock

WORKDIR /opt/airflow
COPY pyproject.toml /opt/airloop/pyproject.toml
# Airflow's side (airloop_ops) imports only the core; the specs are read at parse time.
COPY include/airloop/__init__.py include/airloop/cli.py /opt/airflow/include/airloop/
COPY include/airloop/core/ /opt/airflow/include/airloop/core/
COPY include/projects/ /opt/airflow/include/projects/
COPY dags/ /opt/airflow/dags/
COPY plugins/ /opt/airflow/plugins/
# The package source lives under include/ (setuptools "where = include").
RUN ln -s /opt/airflow/include /opt/airloop/include \
    && pip install --no-cache-dir --no-deps /opt/airloop \
    && chown -R 50000:0 /opt/airflow && chmod -R g=u /opt/airflow

USER 50000
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRLOOP_PROJECTS_DIR=/opt/airflow/include/projects
ENTRYPOINT ["airflow"]
CMD ["version"]
