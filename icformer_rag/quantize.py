"""Storage codecs for digest vectors (issue 17): bf16, int8 with a per-vector scale, fp8 e4m3 with a per-vector scale.

A digest is stored in one of these forms and dequantized on the way back to the dtype the LLM reads
(:func:`decode`). ``bf16`` halves an fp32 digest and is exact for a bf16 one (what a GPU compressor makes);
``int8`` and ``fp8`` halve a bf16 digest again, at the cost of a bounded error per value:

- ``int8``: each vector (row) ``x`` is stored as ``round(x / s)`` in [-127, 127] with ``s = max|x| / 127`` (one fp32
  scale per vector), so ``|x - x'| <= max|x| / 254`` (plus the output dtype's rounding).
- ``fp8``: each row is stored as ``torch.float8_e4m3fn(x / s)`` with ``s = max|x| / 448`` (e4m3's largest
  value), 3 mantissa bits: ``|x - x'| <= |x| / 16 + s * 2**-10`` (the second term for values in e4m3's
  subnormal range).

Whether 8-bit costs QA accuracy is measured separately (issue 17): bf16 stays the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["CODECS", "DEFAULT_CODEC", "Encoded", "codec_name", "decode", "encode", "error_bound", "stored_bytes"]

DEFAULT_CODEC = "bf16"
# name -> (stored element dtype, whether one fp32 scale per vector is stored, the largest code magnitude)
_CODECS: dict[str, tuple[torch.dtype, bool, float]] = {
    "bf16": (torch.bfloat16, False, 0.0),
    "int8": (torch.int8, True, 127.0),
    "fp8": (torch.float8_e4m3fn, True, 448.0),
}
CODECS = tuple(_CODECS)
_ALIASES: dict[str | torch.dtype, str] = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    torch.bfloat16: "bf16",
    "int8": "int8",
    torch.int8: "int8",
    "fp8": "fp8",
    "fp8_e4m3": "fp8",
    "float8_e4m3fn": "fp8",
    "e4m3": "fp8",
    torch.float8_e4m3fn: "fp8",
}


def codec_name(codec: str | torch.dtype) -> str:
    """The canonical codec name of `codec` (``"bf16"``, ``"int8"``, ``"fp8"``, or a torch dtype / alias of one)."""
    name = _ALIASES.get(codec) if isinstance(codec, (str, torch.dtype)) else None
    if name is None:
        raise ValueError(f"unknown digest storage dtype {codec!r}: expected one of {', '.join(CODECS)}")
    return name


@dataclass(frozen=True)
class Encoded:
    """Digest vectors in storage form: `data` (M, C) in the codec's element dtype, `scale` (M,) fp32 or None."""

    codec: str
    data: torch.Tensor
    scale: torch.Tensor | None

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size() + (0 if self.scale is None else self.scale.numel() * 4)


def encode(vectors: torch.Tensor, codec: str | torch.dtype = DEFAULT_CODEC) -> Encoded:
    """`vectors` (M, C), any floating dtype and device, in storage form on the CPU."""
    name = codec_name(codec)
    elem, scaled, top = _CODECS[name]
    x = vectors.detach().to(device="cpu")
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"digest vectors must be a floating (M, C) tensor, got {x.dtype} {tuple(x.shape)}")
    if not scaled:
        return Encoded(name, x.to(elem).contiguous(), None)
    x = x.float()
    absmax = x.abs().amax(dim=1) if x.shape[1] else torch.zeros(x.shape[0])
    scale = torch.where(absmax > 0, absmax / top, torch.ones_like(absmax))
    y = x / scale[:, None]
    if name == "int8":
        data = y.round_().clamp_(-top, top).to(torch.int8)
    else:
        data = y.clamp_(-top, top).to(elem)
    return Encoded(name, data.contiguous(), scale.contiguous())


def decode(encoded: Encoded, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The vectors of `encoded` back in `dtype` (a new tensor unless they are stored in `dtype` already)."""
    if encoded.scale is None:
        return encoded.data if encoded.data.dtype == dtype else encoded.data.to(dtype)
    return (encoded.data.float() * encoded.scale[:, None]).to(dtype)


def error_bound(vectors: torch.Tensor, codec: str | torch.dtype) -> torch.Tensor:
    """The largest |x - decode(encode(x))| each value of `vectors` may have under `codec`, in fp32 (before the
    rounding to the output dtype)."""
    name = codec_name(codec)
    x = vectors.detach().float().cpu()
    if name == "bf16":
        return x.abs() * 2.0**-8
    absmax = x.abs().amax(dim=1, keepdim=True)
    if name == "int8":
        return (absmax / 254.0).expand_as(x) * (1 + 1e-4)  # 1e-4: the fp32 arithmetic of the scaling
    scale = absmax / 448.0
    return x.abs() / 16.0 + scale * 2.0**-10


def stored_bytes(rows: int, width: int, codec: str | torch.dtype) -> int:
    """Bytes of `rows` x `width` vectors in storage form under `codec` (the vectors and scales only)."""
    elem, scaled, _ = _CODECS[codec_name(codec)]
    return rows * width * torch.empty((), dtype=elem).element_size() + (4 * rows if scaled else 0)
