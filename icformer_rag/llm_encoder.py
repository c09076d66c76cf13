"""The ICAE-style encoder (arXiv 2307.06945): the LLM itself, with a LoRA adapter of its own, reads each window
followed by `k` learned memory tokens; the memory tokens' last hidden states are the digests.

Why it is here: issue 14's arm d, the paper's own baseline. IC-Former compresses from word embeddings alone and
never runs the LLM (its reason to exist: ~1/32 of the FLOPs); this encoder runs the whole LLM over every window,
so its keys and values are fully contextual. Its quality, read by the same reader adapter, says how much the
embeddings-only design costs. It has the interface of :class:`~icformer_rag.modeling.ICFormer` (digests from a
batch of windows' word embeddings, the learned BEGIN/END/AE specials, `digest_embeddings` = the memory tokens),
so the compressor, the trainer and the prompt code use either unchanged.

The LLM is not a submodule (its weights are the user's and never saved here); the encoder adapter's LoRA tensors
live inside the LLM's layers and are *also* held in :attr:`LLMEncoder.lora`, so they train, save, load and
enter the fingerprint with the rest of this module. The adapter is switched on only for the encoder's own
forward, under the LLM's adapter lock (:func:`icformer_rag.reader.adapter_scope`), then the previous setting
(the reader while training, none at inference) comes back.

Layout of one window of t real tokens (padding anywhere is masked): `w_0 .. w_{t-1} m_0 .. m_{M-1}` at positions
0 .. t + M - 1, causal, so memory j sees the whole window and memories 0..j, and the first m digests never depend
on later ones (a short window keeps its first ceil(t / ratio), as IC-Former's do).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

from . import prompt, reader
from .config import ICFormerConfig
from .modeling import RMSNorm, check_windows

ENCODER = "icformer_encoder"  # adapter name prefix inside the LLM


def free_adapter_name(llm: Any, base: str) -> str:
    """`base`, or `base_2`, `base_3`, ...: the first name no adapter of `llm` has."""
    name, n = base, 1
    while reader.has_adapter(llm, name):
        n += 1
        name = f"{base}_{n}"
    return name


class LLMEncoder(nn.Module):
    """ICAE-style compressor: context word embeddings (B, N, C) -> digest embeddings (B, M, C), through `llm`."""

    SPECIAL_BEGIN = prompt.SPECIAL_BEGIN
    SPECIAL_END = prompt.SPECIAL_END
    SPECIAL_AE = prompt.SPECIAL_AE

    llm: Any  # the frozen LLM this encoder runs on (not a submodule)

    def __init__(self, config: ICFormerConfig, llm: Any, adapter_name: str | None = None, seed: int | None = 0) -> None:
        super().__init__()
        if config.encoder != "llm":
            raise ValueError(f"LLMEncoder needs config.encoder == 'llm', got {config.encoder!r}")
        self.config = config
        self.digest_embeddings = nn.Parameter(torch.empty(config.num_digest_tokens, config.hidden_size))
        self.special_embeddings = nn.Parameter(torch.empty(config.num_special_tokens, config.hidden_size))
        # The LLM's last hidden state is normalised at its own (output) scale: a projection and a norm at the
        # input embeddings' scale turn it into something the reader reads as input.
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        object.__setattr__(self, "llm", llm)  # not a submodule: never saved, moved or put in train mode here
        self.adapter_name = adapter_name or free_adapter_name(llm, ENCODER)
        if not reader.has_adapter(llm, self.adapter_name):
            lora = reader.ReaderConfig(r=config.encoder_rank, alpha=config.encoder_alpha)
            before = reader.active_adapter(llm)  # adding an adapter switches all off: keep the caller's (a reader)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")  # a reader beside it is the point
                reader.add_reader(llm, lora, name=self.adapter_name, seed=seed)
            reader.set_active(llm, before)
        self.lora = nn.ParameterList(reader.adapter_parameters(llm, self.adapter_name))
        self.reset_parameters()

    def reset_parameters(self, embedding_rms: float = 0.02) -> None:
        """Fresh memory tokens, specials and output projection (identity); the adapter is left as it is (a new
        one is the identity: LoRA B starts at zero)."""
        nn.init.normal_(self.digest_embeddings, std=embedding_rms)
        nn.init.normal_(self.special_embeddings, std=embedding_rms)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(self.config.hidden_size))
            self.norm.weight.fill_(embedding_rms)

    def forward(
        self,
        context_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_digests: int | None = None,
    ) -> torch.Tensor:
        """Compress a batch of windows (see :meth:`ICFormer.forward`: same arguments, same result shape)."""
        real, M = check_windows(self.config, context_embeds, attention_mask, num_digests)
        B, N, C = context_embeds.shape
        device = context_embeds.device
        llm_dtype = self.llm.get_input_embeddings().weight.dtype
        memory = self.digest_embeddings[:M].to(llm_dtype).expand(B, M, C)
        inputs = torch.cat((context_embeds.to(llm_dtype), memory), dim=1)  # (B, N + M, C)
        mask = torch.cat((real, real.new_ones(B, M)), dim=1).long()
        ctx_pos = (real.long().cumsum(-1) - 1).clamp(min=0)
        mem_pos = real.sum(-1, keepdim=True) + torch.arange(M, device=device)
        positions = torch.cat((ctx_pos, mem_pos), dim=1)
        with reader.adapter_scope(self.llm, self.adapter_name):
            hidden = self.llm.base_model(
                inputs_embeds=inputs, attention_mask=mask, position_ids=positions, use_cache=False
            ).last_hidden_state[:, N:]  # (B, M, C)
        return self.norm(self.proj(hidden.to(self.proj.weight.dtype)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
