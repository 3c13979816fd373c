"""The Ray cluster's node table, read from its GCS: ``python -m airloop.devstack.rayprobe
<host:port>`` prints the ALIVE nodes as JSON.

Run with the runtime virtualenv's Python (the only one with Ray) by the devstack's
health checks (:mod:`airloop.devstack.health`), as a subprocess: the control
environment never imports Ray.
"""

from __future__ import annotations

import json
import sys

from ray._raylet import GcsClient


def ray_nodes(address: str, timeout: float = 10.0) -> list[dict]:
    """ALIVE nodes in the GCS node table of the Ray cluster at ``host:port``:
    ``[{"node_id", "is_head", "address", "start_time_ms"}]``.

    Reads the GCS directly (no driver joins the cluster, no dashboard needed). Needs
    the ``ray`` package (runtime environment); raises when the GCS does not answer.
    """
    client = GcsClient(address=address)
    infos = client.get_all_node_info(timeout=timeout)
    alive = []
    for node_id, info in infos.items():
        if info.state != 0:  # GcsNodeInfo.GcsNodeState: 0 ALIVE, 1 DEAD
            continue
        alive.append({
            "node_id": node_id.hex() if hasattr(node_id, "hex") else str(node_id),
            "is_head": bool(info.is_head_node),
            "address": f"{info.node_manager_address}:{info.node_manager_port}",
            "start_time_ms": int(info.start_time_ms),
        })
    return sorted(alive, key=lambda n: (not n["is_head"], n["start_time_ms"]))


def main(argv: list[str] | None = None) -> int:
    """``python -m airloop.devstack.rayprobe <host:port>``: the ALIVE nodes as JSON on
    stdout; exit 1 with one line on stderr when the GCS does not answer."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m airloop.devstack.rayprobe <host:port>", file=sys.stderr)
        return 2
    try:
        nodes = ray_nodes(args[0])
    except Exception as exc:  # GCS unreachable, timeout, version mismatch
        text = str(exc).strip().splitlines()
        print(f"GCS {args[0]}: {text[0][:120] if text else type(exc).__name__}", file=sys.stderr)
        return 1
    print(json.dumps(nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
