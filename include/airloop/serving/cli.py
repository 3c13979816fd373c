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
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airloop.core import cli
from airloop.core.errors import AirloopError
from airloop.core.io import error_detail, http_json
from airloop.core.layout import layout
from airloop.core.settings import Settings
from airloop.core.spec import load_spec
from airloop.core.v2 import records_to_columns, v2_request
from airloop.serving import feedback
from airloop.serving.online.keys import coerce_entity

#: The commands of this plane, with their one-line help.
COMMANDS = {
    "feedback": "append ground-truth labels (id,row,label) from a file",
    "predict": "call the project's model endpoint (V2) and print the answer",
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser, sub = cli.plane_parser("Use a project's model endpoint and feedback log.")
    p = cli.command_parser(sub, "feedback", COMMANDS["feedback"])
    p.add_argument("--project", required=True, help="project spec name")
    p.add_argument("--file", required=True, type=Path, help="labels as .csv (id,row,label) or .jsonl")
    p.set_defaults(func=feedback_command)

    p = cli.command_parser(sub, "predict", COMMANDS["predict"])
    p.add_argument("--project", required=True, help="project spec name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--entity", action="append", help="entity id (repeatable): features "
                     "are joined from the online store")
    src.add_argument("--json", type=Path, help="a V2 request, a list of feature records, "
                     "or a {column: [values]} object")
    p.add_argument("--url", default=None, help="model server URL (default: settings)")
    p.add_argument("--id", default=None, help="request id (default: a new uuid4)")
    p.set_defaults(func=predict_command)
    return parser


def feedback_command(args: argparse.Namespace, settings: Settings) -> int:
    spec = load_spec(args.project, settings.projects_dir)
    labels = feedback.read_file(args.file)
    folder = layout(spec, settings).feedback
    stored = feedback.append(folder, labels)
    print(json.dumps({"stored": stored, "feedback_log": str(folder)}))
    return 0


def build_request(doc: Any, request_id: str) -> dict[str, Any]:
    """A V2 request from a V2 request, a list of records or a {column: values} object."""
    if isinstance(doc, dict) and "inputs" in doc:
        return {"id": request_id, **doc}
    if isinstance(doc, list) and doc and all(isinstance(r, dict) for r in doc):
        doc = records_to_columns(doc)
    if isinstance(doc, dict) and doc and all(isinstance(v, list) for v in doc.values()):
        return v2_request(doc, request_id)
    raise AirloopError(
        "--json must hold a V2 request, a list of records or a {column: [values]} object"
    )


def predict_command(args: argparse.Namespace, settings: Settings) -> int:
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
    status, answer = http_json("POST", url, request, timeout=60)
    if status != 200:
        raise AirloopError(f"{url} -> {status}: {error_detail(answer)}")
    print(json.dumps(answer, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
