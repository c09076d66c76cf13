"""Shared fixtures (icformer_rag.testing): a tiny random Llama with the real SmolLM2 tokenizer, a tiny compressor,
the real default LLM. Tests that need the real default LLM are marked `slow`; it loads once per session."""

import sys
from pathlib import Path

from icformer_rag.testing import (  # noqa: F401 - fixtures
    TINY_COMPRESSOR,
    compressor,
    compressor_kwargs,
    default_llm,
    llm_factory,
    make_tiny_llm,
    soft_lm,
    tiny_llm,
    tokenizer,
)

# benchmarks/ and evalsets/ are folders of the repository, not installed: importable from the clone, after the
# installed packages (CI runs the suite against wheels, so icformer_rag must not come from the clone).
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.append(ROOT)
