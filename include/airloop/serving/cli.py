"""``airloop feedback`` and ``airloop predict`` (standard library only, any environment).

* ``airloop feedback --project P --file labels.csv|labels.jsonl`` appends ground-truth
  labels (columns ``id,row,label``) to the project's feedback log, the same log the
  model server's ``/v2/models/<name>/feedback`` endpoint writes. One bad record
  rejects the file; nothing is written then.
* ``airloop predict --project P --entity 42 [--entity 43 …]`` or ``--json request.json``
  calls the model server's V2 endpoint and prints its JSON answer.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from airloop.errors import AirloopError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feedback", help="append ground-truth labels (id,row,label) from a file")
    p.add_argument("--project", required=True, help="project spec name")
    p.add_argument("--file", required=True, type=Path, help="labels as .csv (id,row,label) or .jsonl")
    p.set_defaults(func=feedback_command)

    p = sub.add_parser("predict", help="call the project's model endpoint (V2) and print the answer")
    p.add_argument("--project", required=True, help="project spec name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--entity", action="append", help="entity id (repeatable): features "
                     "are joined from the online store")
    src.add_argument("--json", type=Path, help="a V2 request, a list of feature records, "
                     "or a {column: [values]} object")
    p.add_argument("--url", default=None, help="model server URL (default: settings)")
    p.add_argument("--id", default=None, help="request id (default: a new uuid4)")
    p.set_defaults(func=predict_command)


def feedback_command(args: argparse.Namespace) -> int:
    from airloop import config
    from airloop.layout import layout
    from airloop.serving import feedback
    from airloop.spec import load_spec

    settings = config.load()
    spec = load_spec(args.project, settings.projects_dir)
    labels = feedback.read_file(args.file)
    folder = layout(spec, settings).feedback
    stored = feedback.append(folder, labels)
    print(json.dumps({"stored": stored, "feedback_log": str(folder)}))
    return 0


def _input(name: str, values: list) -> dict[str, Any]:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        dtype = "INT64"
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        dtype = "FP64"
    elif all(isinstance(v, bool) for v in values):
        dtype = "BOOL"
    else:
        dtype = "BYTES"
    return {"name": name, "shape": [len(values)], "datatype": dtype, "data": values}


def build_request(doc: Any, request_id: str) -> dict[str, Any]:
    """A V2 request from a V2 request, a list of records or a {column: values} object."""
    if isinstance(doc, dict) and "inputs" in doc:
        return {"id": request_id, **doc}
    if isinstance(doc, list) and doc and all(isinstance(r, dict) for r in doc):
        names = list(dict.fromkeys(k for r in doc for k in r))
        doc = {n: [r.get(n) for r in doc] for n in names}
    if isinstance(doc, dict) and doc and all(isinstance(v, list) for v in doc.values()):
        return {"id": request_id, "inputs": [_input(k, v) for k, v in doc.items()]}
    raise AirloopError(
        "--json must hold a V2 request, a list of records or a {column: [values]} object"
    )


def predict_command(args: argparse.Namespace) -> int:
    from airloop import config
    from airloop.serving.online import coerce_entity
    from airloop.spec import load_spec

    settings = config.load()
    spec = load_spec(args.project, settings.projects_dir)
    rid = args.id or str(uuid.uuid4())
    if args.entity:
        try:
            ids = [coerce_entity(e, spec.entity_dtype) for e in args.entity]
        except ValueError as exc:
            raise AirloopError(f"--entity: {exc}") from None
        request = build_request({spec.entity_key: ids}, rid)
    else:
        try:
            doc = json.loads(args.json.read_text())
        except OSError as exc:
            raise AirloopError(f"{args.json}: cannot read ({exc.strerror})") from None
        except ValueError as exc:
            raise AirloopError(f"{args.json}: not JSON ({exc})") from None
        request = build_request(doc, rid)
    base = (args.url or settings.model_server_url).rstrip("/")
    url = f"{base}/v2/models/{spec.serving_name}/infer"
    req = urllib.request.Request(url, data=json.dumps(request).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            body = json.loads(body).get("error", body)
        except (ValueError, AttributeError):
            pass
        raise AirloopError(f"{url} -> {exc.code}: {body}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise AirloopError(f"model server {base} is unreachable: {exc}") from None
    print(json.dumps(answer, indent=2))
    return 0
