"""Every issue-5 target checked in a folder of benchmark JSONs, in one table and one JSON: each run's measured
value, in how many runs the target was met, and how the best run compares with the goal. Targets are keyed
"<benchmark>: <target>" (one target can be checked for two shapes). A committed `why.json` beside the results
(key -> the explanation from a profile) is attached to each target it names.

    python -m benchmarks.targets benchmarks/results/gpu     # writes benchmarks/results/gpu/targets.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import format_table

_GOAL = re.compile(r"^\s*(>=|<=|<|>)\s*([0-9.]+)")


def parse_goal(goal: str) -> tuple[str, float]:
    """('>=', 30.0) from '>= 30x (IC-Former <= 1/30)'; the comparison that must hold for the measured value."""
    m = _GOAL.match(goal)
    if m is None:
        raise ValueError(f"cannot read the goal {goal!r}")
    return m.group(1), float(m.group(2))


def collect(folder: Path) -> list[dict[str, Any]]:
    """The targets of every JSON in `folder`, grouped by benchmark and target, in first-seen order."""
    grouped: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name in ("targets.json", "why.json"):
            continue
        data = json.loads(path.read_text())
        for t in data.get("targets", []):
            key = f"{data['benchmark']}: {t['target']}"
            entry = grouped.setdefault(key, {"target": key, "goal": t["goal"], "runs": []})
            entry["runs"].append(
                {"source": path.name, "measured": t["measured"], "met": t["met"], "note": t.get("note", "")}
            )
    out = []
    for entry in grouped.values():
        op, threshold = parse_goal(entry["goal"])
        higher = op.startswith(">")
        values = [r["measured"] for r in entry["runs"] if r["measured"] is not None]
        best = (max if higher else min)(values) if values else None
        checked = [r for r in entry["runs"] if r["met"] is not None]  # None: informational (a GPU target on a CPU)
        gap = None if best is None else best / threshold  # > 1 meets a ">=" goal, < 1 meets a "<" one
        out.append(
            {
                **entry,
                "direction": op,
                "threshold": threshold,
                "best": best,
                "median": statistics.median(values) if values else None,
                "met_runs": sum(bool(r["met"]) for r in checked),
                "checked_runs": len(checked),
                "best_over_goal": gap,
            }
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of benchmark JSONs (e.g. benchmarks/results/gpu)")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (default FOLDER/targets.json)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    targets = collect(args.folder)
    if not targets:
        parser.error(f"no benchmark JSON in {args.folder} checks a target")
    why_path = args.folder / "why.json"
    why = json.loads(why_path.read_text()) if why_path.is_file() else {}
    if unknown := set(why) - {t["target"] for t in targets}:
        parser.error(f"why.json names targets no run checked: {sorted(unknown)}")
    for t in targets:
        t["why"] = why.get(t["target"])
    rows = [
        {
            "target": t["target"],
            "goal": t["goal"],
            "measured": ", ".join(f"{r['measured']:.3g}" for r in t["runs"] if r["measured"] is not None),
            "met in": f"{t['met_runs']} of {t['checked_runs']} runs" if t["checked_runs"] else "informational",
            "best / goal": f"{t['best_over_goal']:.3g}" if t["best_over_goal"] is not None else "",
        }
        for t in targets
    ]
    table = format_table(rows, ["target", "goal", "measured", "met in", "best / goal"])
    out = args.out or args.folder / "targets.json"
    payload = {"folder": str(args.folder), "targets": targets, "table": table}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(table)
    print(f"\nwrote {out}")
    return payload


if __name__ == "__main__":
    main()
