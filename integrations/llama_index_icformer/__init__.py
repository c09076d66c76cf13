"""LlamaIndex integration of icformer-rag: a node postprocessor that turns retrieved nodes into digests, an
ingestion transform that computes them at indexing time, and a local LLM that reads them.

`ICFormerNodePostprocessor` replaces each node's text with a short marker (``⟦icf:<key>.<tag>⟧``) and puts its
digest in a :class:`~icformer_rag.store.DigestStore`; `ICFormerLLM`, sharing that store, swaps every marker in its
prompts for the digest vectors. Only markers made in this process are read as digests (the tag is an HMAC under a
per-process secret): marker-looking text in a query, a node's text or its metadata is read as text. The
postprocessor is the last one, before `ICFormerLLM`: any other LLM or text-reading postprocessor reads markers as
text (the original text stays in metadata `icformer_text`; `restore_text` puts it back into `source_nodes`).
`ICFormerDigestTransform` fills the store inside an `IngestionPipeline`, so that queries do no compression. Needs the
`llamaindex` extra: ``pip install "icformer-rag[llamaindex]"``.

One flat package rather than LlamaIndex's `llama_index.<kind>.<name>` namespace: the three classes ship inside
icformer-rag (one distribution, one extra), the same way as `langchain_icformer`, and a namespace portion kept in a
repository subfolder would only import through namespace merging across sys.path entries.
"""

import importlib.util

if importlib.util.find_spec("llama_index") is None or importlib.util.find_spec("llama_index.core") is None:
    raise ImportError(
        "llama_index_icformer needs llama-index-core, which is not installed: pip install 'icformer-rag[llamaindex]'"
    )

from ._nodes import restore_text  # noqa: E402
from .ingestion import ICFormerDigestTransform  # noqa: E402
from .llms import ICFormerLLM  # noqa: E402
from .postprocessor import ICFormerNodePostprocessor  # noqa: E402

__all__ = ["ICFormerDigestTransform", "ICFormerLLM", "ICFormerNodePostprocessor", "restore_text"]
