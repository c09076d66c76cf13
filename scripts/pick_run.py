"""Pick the better of several training runs from their metrics: `python scripts/pick_run.py RUN_DIR...`.

Compares the mean auto-encoding loss over the last 200 steps that every run reached (runs that ran side by
side on one GPU reach different step counts), prints one line per run and, last, the winning directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def ae_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if r.get("kind") == "ae" and "loss" in r}


def main(runs: list[str]) -> None:
    losses = {run: ae_losses(Path(run)) for run in runs}
    last = min(max(v, default=0) for v in losses.values())
    scores = {}
    for run, per_step in losses.items():
        window = [loss for step, loss in per_step.items() if last - 200 < step <= last]
        scores[run] = sum(window) / max(len(window), 1) if window else float("inf")
        print(f"{run}: mean AE loss over steps {max(last - 199, 0)}..{last} = {scores[run]:.4f} ({len(window)} logs)")
    print(min(scores, key=scores.get))


if __name__ == "__main__":
    main(sys.argv[1:])
