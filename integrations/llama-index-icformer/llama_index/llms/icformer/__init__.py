"""LlamaIndex LLM of icformer-rag: a local Hugging Face LLM that reads IC-Former digests in place of retrieved text.

`ICFormerLLM` swaps every digest marker ``⟦icf:<key>.<tag>⟧`` in its prompts (put there by
:class:`llama_index.postprocessor.icformer.ICFormerNodePostprocessor`, sharing its store) for the digest's vectors.
Distribution: ``pip install llama-index-icformer``.
"""

from .base import ICFormerLLM

__all__ = ["ICFormerLLM"]
