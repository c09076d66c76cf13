"""Greedy reconstruction BLEU given the first k true tokens (oracle prefix), run7 vs shipped."""
import sys, numpy as np, torch
from icformer_rag.compressor import load_compressor
from icformer_rag.modeling import ICFormer
from icformer_rag.eval import corpus_bleu
from icformer_rag.training.sampling import SpanSampler
torch.manual_seed(0)
ckpt = sys.argv[1]; n = int(sys.argv[2]); count = int(sys.argv[3])
comp, llm, tok = load_compressor(None if ckpt == "shipped" else ckpt, device="cpu")
windows = SpanSampler("training_logs/evalset", "heldout").sample(np.random.default_rng([1234, n]), count, n).tolist()
embed = llm.get_input_embeddings(); special = comp.model.special_embeddings.to(embed.weight.dtype)
digests = comp.compress_windows(windows)
with torch.no_grad():
  for k in (0, 1, 4, 16):
    hyps, refs = [], []
    rows = torch.stack([torch.cat((special[ICFormer.SPECIAL_BEGIN:ICFormer.SPECIAL_BEGIN+1], d, special[ICFormer.SPECIAL_END:ICFormer.SPECIAL_AE+1], embed(torch.tensor(w[:k], dtype=torch.long)))) for d, w in zip(digests, windows)])
    gen = llm.generate(inputs_embeds=rows, attention_mask=torch.ones(rows.shape[:2], dtype=torch.long), max_new_tokens=n-k, min_new_tokens=n-k, do_sample=False, pad_token_id=0)
    hyps = gen[:, : n - k].tolist(); refs = [w[k:] for w in windows]
    print(f"{ckpt} n={n} oracle prefix {k:2d}: BLEU-4 {corpus_bleu(refs, hyps):.3f}", flush=True)
    if k in (0, 4):
        print("  REF:", repr(tok.decode(refs[0][:60]))); print("  HYP:", repr(tok.decode(hyps[0][:60])))
