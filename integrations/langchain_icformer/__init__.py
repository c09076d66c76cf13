"""LangChain integration of icformer-rag: a document compressor that turns retrieved documents into digests, and a
local chat model that reads them.

`ICFormerCompressor` replaces each document's text with a short marker (``⟦icf:<key>.<tag>⟧``) and puts its digest in
a :class:`~icformer_rag.store.DigestStore`; `ChatICFormer`, sharing that store, swaps every marker in its messages
for the digest vectors. Only markers made in this process are read as digests (the tag is an HMAC under a
per-process secret): marker-looking text in a question, a document or metadata is read as text. The compressor is
the last step before `ChatICFormer`: any other model or text-reading step reads markers as text (the original text
stays in metadata `icformer_text`; `restore_text` puts it back, e.g. for citations). Needs the
`langchain` extra: ``pip install "icformer-rag[langchain]"``.
"""

import importlib.util

if importlib.util.find_spec("langchain_core") is None:
    raise ImportError(
        "langchain_icformer needs langchain-core, which is not installed: pip install 'icformer-rag[langchain]'"
    )

from .chat_models import ChatICFormer  # noqa: E402
from .document_compressors import ICFormerCompressor, restore_text  # noqa: E402

__all__ = ["ChatICFormer", "ICFormerCompressor", "restore_text"]
