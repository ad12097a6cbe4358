"""Memorization and membership-inference audits (issue 6).

- :mod:`radpriv.audit.exposure`: canary exposure (Carlini et al. 2019, "The Secret Sharer"): the rank
  of an inserted secret among candidates of the same format by the model's log-perplexity.
- :mod:`radpriv.audit.causal_lm`: a causal LM (SmolLM2-135M read from its GGUF and dequantized by
  transformers) fine-tuned with LoRA on report text, without or with DP-SGD (opacus); secret scoring
  and greedy completions.
- :mod:`radpriv.audit.mia`: membership inference against classifiers (loss threshold; reference-model
  calibrated), ROC AUC, TPR at a fixed FPR, and an empirical lower bound on ε.
- :mod:`radpriv.audit.reconstruction`: masked-token reconstruction by an encoder through a probe MLM
  head (the bundled MiniLM has none), scored by embedding cosine similarity.
"""

from radpriv.audit.exposure import (exposure_from_scores, extrapolated_exposure, random_secrets,
                                    secret_format_space)
from radpriv.audit.mia import attack_metrics, empirical_epsilon, per_sample_bce, tpr_at_fpr

__all__ = ["attack_metrics", "empirical_epsilon", "exposure_from_scores", "extrapolated_exposure",
           "per_sample_bce", "random_secrets", "secret_format_space", "tpr_at_fpr"]
