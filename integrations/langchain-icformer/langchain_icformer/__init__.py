"""LangChain integration of icformer-rag: a document compressor that turns retrieved documents into digests, and a
local chat model that reads them.

`ICFormerCompressor` replaces each document's text with a short marker (``⟦icf:<key>.<tag>⟧``) and puts its digest in
a :class:`~icformer_rag.DigestStore`; `ChatICFormer`, sharing that store, swaps every marker in its messages for the
digest vectors. Only markers made in this process are read as digests (the tag is an HMAC under a per-process
secret): marker-looking text in a question, a document or metadata is read as text. The compressor is the last step
before `ChatICFormer`: any other model or text-reading step reads markers as text (the original text stays in
metadata `icformer_text`; `restore_text` puts it back, e.g. for citations). Distribution:
``pip install langchain-icformer``.
"""

from .chat_models import ChatICFormer
from .document_compressors import ICFormerCompressor, restore_text

__all__ = ["ChatICFormer", "ICFormerCompressor", "restore_text"]
