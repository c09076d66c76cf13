"""Shared by the postprocessor and the ingestion transform: node text -> digests, the metadata bookkeeping,
the LLM's compressor."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, NodeWithScore, TextNode

from icformer_rag import (
    METADATA_KEYS,
    METADATA_TEXT,
    CompressedText,
    ContextCompressor,
    DigestStore,
    compress_texts,
    require_last_step,
)

LAST_STEP = (
    "ICFormerNodePostprocessor must be the last node postprocessor, before ICFormerLLM (sharing its store): "
    "anything after it (a reranker, a sentence optimizer, a metadata replacement, an LLM that is not ICFormerLLM) "
    "reads the markers ⟦icf:...⟧ as text"
)
# Postprocessors that may follow it: they keep, drop or move nodes by score or position, never read their text.
_ORDER_ONLY_STEPS = frozenset({"SimilarityPostprocessor", "LongContextReorder"})


def restore_text(nodes: Sequence[NodeWithScore]) -> list[NodeWithScore]:
    """Copies of compressed nodes (e.g. a response's `source_nodes`) with their original text back (from metadata
    `icformer_text`), to show as citations or give to another model; other nodes are returned as they are."""
    out = []
    for item in nodes:
        text = item.node.metadata.get(METADATA_TEXT)
        if isinstance(text, str) and isinstance(item.node, TextNode):
            node = item.node.model_copy(deep=False)
            node.metadata = dict(item.node.metadata)
            node.set_content(text)
            item = NodeWithScore(node=node, score=item.score)
        out.append(item)
    return out


def node_texts(nodes: Sequence[BaseNode]) -> list[str]:
    """The text each node's digest is made of: its content without metadata (metadata stays readable text)."""
    texts = []
    for i, node in enumerate(nodes):
        if not isinstance(node, TextNode) or isinstance(node, ImageNode):  # ImageNode subclasses TextNode
            raise TypeError(f"node {i} is a {type(node).__name__}; only text nodes can be compressed into digests")
        texts.append(node.get_content(metadata_mode=MetadataMode.NONE))
    return texts


def compress_nodes(
    compressor: ContextCompressor, store: DigestStore, nodes: Sequence[BaseNode], key_terms: bool = False
) -> list[CompressedText]:
    """The nodes' texts compressed (one batched compression of the texts the store lacks): each one's marker (and
    key-terms line) and metadata."""
    return compress_texts(compressor, store, node_texts(nodes), key_terms)


def hide_from_llm_and_embeddings(node: BaseNode) -> None:
    """The icformer metadata is bookkeeping: keep it out of the text the LLM reads and the embedder embeds."""
    for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
        keys.extend(k for k in METADATA_KEYS if k not in keys)


def llm_compressor(llm: Any) -> ContextCompressor:
    """The compressor of an :class:`ICFormerLLM`'s SoftPromptLM, for the `for_llm` constructors; ValueError if it
    has none."""
    from llama_index.llms.icformer import ICFormerLLM

    if not isinstance(llm, ICFormerLLM):
        raise TypeError(
            f"for_llm() takes an ICFormerLLM, got {type(llm).__name__}: only ICFormerLLM reads digest markers; any "
            "other LLM would read them as text (give it the nodes uncompressed)"
        )
    if llm.lm.compressor is None:
        raise ValueError("the LLM's SoftPromptLM has no compressor")
    return llm.lm.compressor


def check_engine(post: Any) -> None:
    """Where `post` (an ICFormerNodePostprocessor) runs inside a query or chat engine: ValueError if a
    text-reading postprocessor follows it, or if the engine's LLM is not an ICFormerLLM over the same store;
    else the engine's prompt helpers are made to count what the LLM reads (:attr:`ICFormerLLM.tokenizer`), so that
    LlamaIndex packs prompts by digest positions, not by marker characters. The engine is found by looking a
    few frames up for the object whose `_node_postprocessors` holds `post`."""
    from llama_index.llms.icformer import ICFormerLLM

    owner = require_last_step(
        post, "_node_postprocessors", rule=LAST_STEP, order_only=_ORDER_ONLY_STEPS, max_frames=12, skip=2
    )
    if owner is None:
        return
    synth = getattr(owner, "_response_synthesizer", None)
    llm = getattr(synth, "_llm", None) if synth is not None else getattr(owner, "_llm", None)
    if llm is None:
        return
    if not isinstance(llm, ICFormerLLM):
        raise ValueError(
            f"{LAST_STEP}. This {type(owner).__name__} answers with {type(llm).__name__}: pass "
            "llm=ICFormerLLM(...) and ICFormerNodePostprocessor.for_llm(llm), or leave the postprocessor out"
        )
    if llm.store is not post.store:
        raise ValueError(
            "ICFormerNodePostprocessor writes into another digest store than this engine's ICFormerLLM reads: "
            "make it with ICFormerNodePostprocessor.for_llm(llm)"
        )
    for helper in (getattr(synth, "_prompt_helper", None), getattr(synth, "_chat_prompt_helper", None)):
        counter = getattr(helper, "_token_counter", None)
        if counter is not None and getattr(counter, "tokenizer", None) is not llm.tokenizer:
            with _HELPER_LOCK:
                counter.tokenizer = llm.tokenizer


_HELPER_LOCK = threading.Lock()
