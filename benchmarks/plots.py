"""PNG plots of the results: one horizontal bar chart per comparison and metric,
median bars with min-max whiskers, coloured by role (airloop, peer, floor)."""

from __future__ import annotations

from pathlib import Path

COLORS = {"airloop": "#1f77b4", "peer": "#ff7f0e", "floor": "#7f7f7f"}


def plot_all(sections: dict[str, dict], out: Path) -> list[str]:
    """Write ``<module>-<n>.png`` files into ``out``; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for module, doc in sections.items():
        for old in out.glob(f"{module}-*.png"):
            old.unlink()
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in doc["rows"]:
            if r["values"]:
                groups.setdefault((r["metric"], r["unit"]), []).append(r)
        for i, ((metric, unit), rows) in enumerate(sorted(groups.items())):
            labels = [f"{r['case']} | {r['path']}" for r in rows]
            med = [sorted(r["values"])[len(r["values"]) // 2] for r in rows]
            lo = [m - min(r["values"]) for m, r in zip(med, rows)]
            hi = [max(r["values"]) - m for m, r in zip(med, rows)]
            fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.3))
            ax.barh(range(len(rows)), med, xerr=[lo, hi], capsize=3,
                    color=[COLORS.get(r["role"], "#2ca02c") for r in rows])
            ax.set_yticks(range(len(rows)), labels, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(f"{metric} ({unit})")
            if max(med) > 0 and min(m for m in med if m > 0) * 100 < max(med):
                ax.set_xscale("log")
            ax.set_title(f"{module}: {metric} (blue airloop, orange peer, grey floor)", fontsize=9)
            fig.subplots_adjust(left=0.42, right=0.97, top=0.9, bottom=0.6 / (0.42 * len(rows) + 1.3))
            name = f"{module}-{i + 1}.png"
            fig.savefig(out / name, dpi=80)
            plt.close(fig)
            names.append(name)
    return names
