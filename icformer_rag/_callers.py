"""Where a pipeline step runs: the one frame-walk both adapters use to check that the compressor step is last.

LangChain's DocumentCompressorPipeline and LlamaIndex's query engines call their steps from a method of the
pipeline object, which holds the steps in a list; the order is known only there, so the check looks a few frames
up for it. A heuristic: when no such object is found, nothing is checked.
"""

from __future__ import annotations

import sys
from typing import Any


def find_pipeline(step: Any, attr: str, max_frames: int, skip: int = 2) -> tuple[Any, list[str]] | None:
    """The object whose list attribute `attr` holds `step`, found in the `self` of one of the `max_frames` frames
    above the caller of the caller (`skip` frames up from here), with the type names of the steps after `step`'s
    last occurrence; None when there is none (e.g. the step was called directly)."""
    try:
        frame = sys._getframe(skip + 1)
    except ValueError:  # called from the top of a stack: no pipeline around it
        return None
    for _ in range(max_frames):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        steps = getattr(owner, attr, None) if owner is not step else None
        if isinstance(steps, (list, tuple)) and any(s is step for s in steps):
            at = max(i for i, s in enumerate(steps) if s is step)
            return owner, [type(s).__name__ for s in steps[at + 1 :]]
        frame = frame.f_back
    return None
