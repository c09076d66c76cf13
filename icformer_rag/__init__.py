"""icformer-rag: compress retrieved documents into digest vectors that a frozen local LLM reads.

IC-Former (arXiv 2406.13618) cross-attention compressor + soft-prompt generation.
"""

from .adapters import (
    METADATA_KEY,
    METADATA_KEYS,
    METADATA_TEXT,
    CompressedText,
    compress_texts,
    find_pipeline,
    fit_positions,
    require_last_step,
)
from .compressor import ContextCompressor, load_compressor
from .config import ICFormerConfig, LLMSignature
from .digest import Digest, InvalidDigestError
from .generation import ChatPrompt, ChatResult, GenerationSettings, SoftPromptLM
from .key_terms import key_terms_line, with_key_terms
from .kv_store import KVDigestStore
from .llm import DEFAULT_LLM, load_llm
from .modeling import ICFormer
from .packed_store import PackedDigestStore
from .store import BaseDigestStore, DigestStore, digest_key, find_markers, key_for, marker_for

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LLM",
    "METADATA_KEY",
    "METADATA_KEYS",
    "METADATA_TEXT",
    "BaseDigestStore",
    "ChatPrompt",
    "ChatResult",
    "CompressedText",
    "ContextCompressor",
    "Digest",
    "DigestStore",
    "GenerationSettings",
    "ICFormer",
    "ICFormerConfig",
    "InvalidDigestError",
    "KVDigestStore",
    "LLMSignature",
    "PackedDigestStore",
    "SoftPromptLM",
    "compress_texts",
    "digest_key",
    "find_markers",
    "find_pipeline",
    "fit_positions",
    "key_for",
    "key_terms_line",
    "load_compressor",
    "load_llm",
    "marker_for",
    "require_last_step",
    "with_key_terms",
]
