"""Masked-token reconstruction of report findings by an encoder, scored by embedding cosine similarity.

The bundled encoder (``minilm-l6``: all-MiniLM-L6-v2, a sentence-transformers export) ships **without
an MLM head**, so it cannot reconstruct masked tokens as distributed. The documented alternative used
here is a **probe MLM head**: the BERT prediction-head shape (dense → GELU → LayerNorm → decoder tied
to the encoder's frozen word-embedding matrix + a bias) fitted on the **base** encoder's hidden states
of *public* reports (reports that no audited model trains on), with BERT-style random masking. The same
probe is then applied, unchanged, to the base encoder and to each fine-tuned encoder (non-private and
DP), so differences come from the encoders, not from the head.

Reconstruction of one report: a fixed random fraction of the tokens of its FINDINGS section is replaced
by ``[MASK]``; each masked token is filled with the probe's argmax; the reconstructed findings are
compared with the original findings by the cosine similarity of their mean-pooled embeddings from the
**base** MiniLM (the sentence-similarity model it was trained to be), and by token accuracy of the fills.
Memorisation shows as training reports (members) being reconstructed closer than held-out reports
(non-members), and as that gap shrinking under DP.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ProbeHead(nn.Module):
    def __init__(self, word_embeddings: torch.Tensor, eps: float = 1e-12):
        super().__init__()
        h = word_embeddings.shape[1]
        self.dense = nn.Linear(h, h)
        self.norm = nn.LayerNorm(h, eps=eps)
        self.register_buffer("decoder", word_embeddings.detach().clone())
        self.bias = nn.Parameter(torch.zeros(word_embeddings.shape[0]))

    def forward(self, hidden):
        return self.norm(nn.functional.gelu(self.dense(hidden))) @ self.decoder.T + self.bias


def findings_span(text: str) -> tuple[int, int]:
    """Character span of the FINDINGS section (whole text when there is none)."""
    i = text.find("FINDINGS:")
    if i < 0:
        return 0, len(text)
    i += len("FINDINGS:")
    j = text.find("IMPRESSION:", i)
    return i, (j if j >= 0 else len(text))


def _encoder_of(model):
    """The bare transformer encoder from a base encoder or a radpriv.dp ReportClassifier (LoRA or not)."""
    enc = getattr(model, "encoder", model)
    if enc.__class__.__name__ == "BertEncoder":  # a bare BertModel was passed
        return model
    return enc


@torch.no_grad()
def hidden_states(encoder, batch: dict) -> torch.Tensor:
    enc = _encoder_of(encoder)
    enc.eval()
    kw = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    return enc(**kw).last_hidden_state


def mask_findings(tok, texts, fraction: float, max_length: int, seed: int = 0):
    """Tokenize; choose ``fraction`` of the FINDINGS tokens of each report (at least one) to mask."""
    rng = np.random.default_rng(seed)
    batch = tok(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt",
                return_offsets_mapping=True)
    offsets = batch.pop("offset_mapping")
    masked = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    for i, t in enumerate(texts):
        a, b = findings_span(t)
        cand = [j for j, (s, e) in enumerate(offsets[i].tolist()) if e > s and s >= a and e <= b]
        if not cand:
            continue
        k = max(1, int(round(fraction * len(cand))))
        masked[i, rng.choice(cand, size=k, replace=False)] = True
    original = batch["input_ids"].clone()
    batch["input_ids"] = batch["input_ids"].masked_fill(masked, tok.mask_token_id)
    return batch, original, masked, offsets


def fit_probe(encoder, tok, public_texts, fraction: float = 0.15, max_length: int = 160, steps: int = 150,
              lr: float = 3e-3, batch_size: int = 128, seed: int = 0) -> ProbeHead:
    """Fit the probe head on the frozen encoder's hidden states at masked positions of public text
    (any token may be masked here, not only findings)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = _encoder_of(encoder)
    batch = tok(list(public_texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    special = torch.tensor([[t in tok.all_special_ids for t in row] for row in batch["input_ids"].tolist()])
    elig = (batch["attention_mask"] == 1) & ~special
    masked = elig & torch.tensor(rng.random(elig.shape) < fraction)
    target = batch["input_ids"][masked]
    batch["input_ids"] = batch["input_ids"].masked_fill(masked, tok.mask_token_id)
    H = torch.cat([hidden_states(enc, {k: v[i: i + 32] for k, v in batch.items()})[masked[i: i + 32]]
                   for i in range(0, len(batch["input_ids"]), 32)])
    head = ProbeHead(enc.get_input_embeddings().weight)
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(H), (min(batch_size, len(H)),), generator=g)
        loss = nn.functional.cross_entropy(head(H[idx]), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    head.fit_info = {"n_public_reports": len(public_texts), "n_masked_tokens": int(len(H)), "final_loss": float(loss)}
    return head


@torch.no_grad()
def embed(encoder, tok, texts, max_length: int = 256) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings (the all-MiniLM-L6-v2 sentence embedding recipe)."""
    out = []
    for i in range(0, len(texts), 32):
        b = tok(list(texts[i: i + 32]), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        h = hidden_states(encoder, b)
        m = b["attention_mask"].unsqueeze(-1).float()
        v = (h * m).sum(1) / m.sum(1).clamp(min=1)
        out.append(nn.functional.normalize(v, dim=-1).numpy())
    return np.concatenate(out)


@torch.no_grad()
def reconstruct(encoder, head: ProbeHead, tok, texts, fraction: float = 0.3, max_length: int = 160, seed: int = 0):
    """Masked findings filled by ``encoder`` + probe. Returns (original findings, reconstructed findings,
    per-report token accuracy)."""
    batch, original, masked, offsets = mask_findings(tok, texts, fraction, max_length, seed)
    filled = batch["input_ids"].clone()
    for i in range(0, len(texts), 32):
        sl = slice(i, i + 32)
        H = hidden_states(encoder, {k: v[sl] for k, v in batch.items()})
        logits = head(H)
        logits[..., tok.all_special_ids] = -1e9
        pred = logits.argmax(-1)
        filled[sl] = torch.where(masked[sl], pred, original[sl])
    origs, recs, acc = [], [], []
    for i, t in enumerate(texts):
        a, b = findings_span(t)
        keep = [j for j, (s, e) in enumerate(offsets[i].tolist()) if e > s and s >= a and e <= b]
        origs.append(tok.decode(original[i, keep]))
        recs.append(tok.decode(filled[i, keep]))
        m = masked[i]
        acc.append(float((filled[i][m] == original[i][m]).float().mean()) if m.any() else float("nan"))
    return origs, recs, np.array(acc)


def reconstruction_similarity(encoders: dict, head: ProbeHead, tok, judge, texts, fraction: float = 0.3,
                              max_length: int = 160, seed: int = 0):
    """Per report and encoder: cosine(original findings, reconstruction) under the ``judge`` encoder
    (the base MiniLM) and token accuracy. Returns (DataFrame, examples {encoder: (orig, rec)})."""
    import pandas as pd

    rows, examples = [], {}
    for name, enc in encoders.items():
        orig, rec, acc = reconstruct(enc, head, tok, texts, fraction, max_length, seed)
        cos = (embed(judge, tok, orig) * embed(judge, tok, rec)).sum(1)
        examples[name] = (orig, rec)
        rows += [{"encoder": name, "row": i, "cosine": float(c), "token_accuracy": float(a)}
                 for i, (c, a) in enumerate(zip(cos, acc))]
    return pd.DataFrame(rows), examples
