"""The local platform: one supervisor process runs PostgreSQL, Airflow 3, MLflow,
MLServer and (optionally) a two-node Ray cluster on loopback, all state under
``$AIRLOOP_HOME``. Entry points: ``airloop up/down/status/logs`` (:mod:`.cli`).
"""
