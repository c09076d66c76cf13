"""Shared by the postprocessor and the ingestion transform: node text -> digests, the metadata bookkeeping,
the LLM's compressor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, TextNode

from icformer_rag.compressor import ContextCompressor
from icformer_rag.digest import Digest
from icformer_rag.store import DigestStore

METADATA_KEY = "icformer_digest_key"
METADATA_HIT = "icformer_cache_hit"
METADATA_TOKENS = "icformer_tokens"
METADATA_DIGESTS = "icformer_digests"
METADATA_KEYS = (METADATA_KEY, METADATA_HIT, METADATA_TOKENS, METADATA_DIGESTS)


def node_texts(nodes: Sequence[BaseNode]) -> list[str]:
    """The text each node's digest is made of: its content without metadata (metadata stays readable text)."""
    texts = []
    for i, node in enumerate(nodes):
        if not isinstance(node, TextNode) or isinstance(node, ImageNode):  # ImageNode subclasses TextNode
            raise TypeError(f"node {i} is a {type(node).__name__}; only text nodes can be compressed into digests")
        texts.append(node.get_content(metadata_mode=MetadataMode.NONE))
    return texts


def compress_nodes(
    compressor: ContextCompressor, store: DigestStore, nodes: Sequence[BaseNode]
) -> tuple[list[str], list[Digest], list[bool]]:
    """The nodes' texts, their digests (one batched compression of the misses) and whether each was in the
    store."""
    texts = node_texts(nodes)
    digests, hits = store.compress_cached(compressor, texts)
    return texts, digests, hits


def hide_from_llm_and_embeddings(node: BaseNode) -> None:
    """The icformer metadata is bookkeeping: keep it out of the text the LLM reads and the embedder embeds."""
    for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
        keys.extend(k for k in METADATA_KEYS if k not in keys)


def llm_compressor(llm: Any) -> ContextCompressor:
    """The compressor of an :class:`ICFormerLLM`'s SoftPromptLM, for the `for_llm` constructors; ValueError if it
    has none."""
    if llm.lm.compressor is None:
        raise ValueError("the LLM's SoftPromptLM has no compressor")
    return llm.lm.compressor
