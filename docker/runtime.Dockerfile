# Step-runtime image: the `airloop <step>` CLI that KubernetesPodOperator pods run.
# Installs exactly requirements/runtime.lock (MLflow, Feast, DVC, Ray, Evidently,
# Great Expectations, scikit-learn, ...) and then airloop with --no-deps.
# Build from the repository root: docker build -f docker/runtime.Dockerfile -t airloop-runtime .
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    GX_ANALYTICS_ENABLED=false \
    RAY_USAGE_STATS_ENABLED=0 \
    FEAST_USAGE=False \
    AIRLOOP_MODE=kubernetes \
    AIRLOOP_HOME=/home/airloop/.airloop \
    AIRLOOP_PROJECTS_DIR=/opt/airloop/include/projects

# git is needed by DVC and for the lineage commit; it comes from the Debian archive.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 airloop \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin airloop

COPY requirements/runtime.lock /tmp/runtime.lock
RUN pip install --no-cache-dir -r /tmp/runtime.lock && rm /tmp/runtime.lock

WORKDIR /opt/airloop
COPY pyproject.toml /opt/airloop/pyproject.toml
# Only the planes a step pod runs: the core and the step runtime (their imports stay
# inside these two packages; tests/control/test_images.py checks it with the import graph).
COPY include/airloop/__init__.py include/airloop/cli.py /opt/airloop/include/airloop/
COPY include/airloop/core/ /opt/airloop/include/airloop/core/
COPY include/airloop/runtime/ /opt/airloop/include/airloop/runtime/
COPY include/projects/ /opt/airloop/include/projects/
RUN pip install --no-cache-dir --no-deps /opt/airloop

USER 10001
ENTRYPOINT ["airloop"]
CMD ["--help"]
