# Model-server image: MLServer 1.7 with the MLflow runtime (Open Inference Protocol V2).
# Installs exactly requirements/serving.lock and then airloop with --no-deps (for the
# request/response logging hooks in airloop). Seldon Core 2 Servers and KServe
# ServingRuntimes use this image; models are pulled from the MLflow artifact store.
# Build from the repository root: docker build -f docker/serving.Dockerfile -t airloop-serving .
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLSERVER_MODELS_DIR=/mnt/models

RUN groupadd --gid 10001 mlserver \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin mlserver

COPY requirements/serving.lock /tmp/serving.lock
RUN pip install --no-cache-dir -r /tmp/serving.lock && rm /tmp/serving.lock

WORKDIR /opt/airloop
COPY pyproject.toml /opt/airloop/pyproject.toml
# Only the planes the model server runs: the core and serving (never the step runtime).
COPY include/airloop/__init__.py include/airloop/cli.py /opt/airloop/include/airloop/
COPY include/airloop/core/ /opt/airloop/include/airloop/core/
COPY include/airloop/serving/ /opt/airloop/include/airloop/serving/
RUN pip install --no-cache-dir --no-deps /opt/airloop \
    && mkdir -p /mnt/models && chown 10001:10001 /mnt/models

USER 10001
EXPOSE 8080 8081 8082
ENTRYPOINT ["mlserver"]
CMD ["start", "/mnt/models"]
