"""Write the default LLM's tokenizer (with its chat template) into a folder, to carry to a GPU machine that has
no converted default LLM: `python -m benchmarks.stage_tokenizer .bench/tokenizer` (~3.5 MB)."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> Path:
    from icformer_rag.llm import load_default_tokenizer

    argv = sys.argv[1:] if argv is None else argv
    target = Path(argv[0] if argv else ".bench/tokenizer")
    target.mkdir(parents=True, exist_ok=True)
    load_default_tokenizer().save_pretrained(target)
    print(target)
    return target


if __name__ == "__main__":
    main()
