"""LlamaIndex node postprocessor of icformer-rag: retrieved nodes -> digest markers, and an ingestion transform that
computes the digests at indexing time.

`ICFormerNodePostprocessor` replaces each node's text with a short marker (``⟦icf:<key>.<tag>⟧``) and puts its
digest in a :class:`~icformer_rag.DigestStore`; :class:`llama_index.llms.icformer.ICFormerLLM`, sharing that store,
swaps every marker in its prompts for the digest vectors. Only markers made in this process are read as digests (the
tag is an HMAC under a per-process secret): marker-looking text in a query, a node's text or its metadata is read as
text. The postprocessor is the last one, before `ICFormerLLM`: any other LLM or text-reading postprocessor reads
markers as text (the original text stays in metadata `icformer_text`; `restore_text` puts it back into
`source_nodes`). `ICFormerDigestTransform` fills the store inside an `IngestionPipeline`, so that queries do no
compression. Distribution: ``pip install llama-index-icformer``.
"""

from ._nodes import restore_text
from .base import ICFormerNodePostprocessor
from .ingestion import ICFormerDigestTransform

__all__ = ["ICFormerDigestTransform", "ICFormerNodePostprocessor", "restore_text"]
