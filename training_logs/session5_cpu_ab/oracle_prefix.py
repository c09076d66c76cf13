"""Greedy reconstruction BLEU-4 when decoding starts from the first k true tokens (an oracle prefix).

    PYTHONPATH=. python training_logs/session5_cpu_ab/oracle_prefix.py CHECKPOINT|shipped LENGTH COUNT

The session-5 scratch probe (run 7, 128 tokens, 12 spans): BLEU-4 of the rest 0.116 / 0.154 / 0.152 / 0.176 for
k = 0 / 1 / 4 / 16, so a wrong first token is not what derails greedy reconstruction.
"""

import sys

import numpy as np
import torch

from icformer_rag.compressor import load_compressor
from icformer_rag.eval import corpus_bleu
from icformer_rag.modeling import ICFormer
from icformer_rag.training.sampling import SpanSampler

torch.manual_seed(0)
ckpt, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
comp, llm, tok = load_compressor(None if ckpt == "shipped" else ckpt, device="cpu")
rng = np.random.default_rng([1234, n])  # the spans `icformer-rag eval` draws for this length
windows = SpanSampler("evalsets/realtext_dev", "heldout").sample(rng, count, n).tolist()
embed = llm.get_input_embeddings()
special = comp.model.special_embeddings.to(embed.weight.dtype)
begin = special[ICFormer.SPECIAL_BEGIN : ICFormer.SPECIAL_BEGIN + 1]
end_ae = special[ICFormer.SPECIAL_END : ICFormer.SPECIAL_AE + 1]
digests = comp.compress_windows(windows)
with torch.no_grad():
    for k in (0, 1, 4, 16):
        known = [embed(torch.tensor(w[:k], dtype=torch.long)) for w in windows]
        rows = torch.stack([torch.cat((begin, d, end_ae, p)) for d, p in zip(digests, known, strict=True)])
        mask = torch.ones(rows.shape[:2], dtype=torch.long)
        gen = llm.generate(
            inputs_embeds=rows,
            attention_mask=mask,
            max_new_tokens=n - k,
            min_new_tokens=n - k,
            do_sample=False,
            pad_token_id=0,
        )
        hyps, refs = gen[:, : n - k].tolist(), [w[k:] for w in windows]
        print(f"{ckpt} n={n} oracle prefix {k:2d}: BLEU-4 {corpus_bleu(refs, hyps):.3f}", flush=True)
        if k in (0, 4):
            print("  REF:", repr(tok.decode(refs[0][:60])))
            print("  HYP:", repr(tok.decode(hyps[0][:60])))
