"""# airloop project pipelines

Generated from the project specs in `include/projects/*.yaml` (or `$AIRLOOP_PROJECTS_DIR`):
five Airflow DAGs per project.

| DAG | what it does | schedule |
|---|---|---|
| `<p>__ingest` | landing zone → validate (Great Expectations) → version (DVC) → offline store; emits the project's dataset asset | `schedules.ingest` |
| `<p>__materialize` | Feast materialization offline → online | the dataset asset |
| `<p>__train` | Ray Tune search → register (`challenger`) → promotion gate → deploy → `champion`, or `rejected` | manual, API or the monitor |
| `<p>__monitor` | prediction log + ground truth → drift and performance → trigger `<p>__train` or stop | `schedules.monitor` |
| `<p>__batch_predict` | offline features → champion → predictions table | `schedules.batch_predict` |

Every task is one `airloop <step> --project <p> --run-id <run id>` command: a pod of the
runtime image when `AIRLOOP_MODE=kubernetes`, the runtime virtualenv when `local`.
Trigger `<p>__train` with conf `{"trigger": "manual|schedule|drift|api", "reason": "…"}`.
Adding a project is adding YAML: this file never changes. An invalid spec shows up as an
import error of this file naming the spec file and field; the other projects still load.
"""

from airloop_ops.builder import build_all

globals().update(build_all(doc_md=__doc__))
