"""Memorization and membership-inference audits (issue 6).

- :mod:`radpriv.audit.exposure`: canary exposure (Carlini et al. 2019, "The Secret Sharer"): the rank
  of an inserted secret among candidates of the same format by the model's log-perplexity.
- :mod:`radpriv.audit.causal_lm`: a causal LM (SmolLM2-135M read from its GGUF and dequantized by
  transformers) fine-tuned with LoRA on report text, without or with DP-SGD (opacus); secret scoring
  and greedy completions.
- :mod:`radpriv.audit.mia`: membership inference against classifiers (loss threshold; reference-model
  calibrated) on audit reports each included in training with probability 1/2; ROC AUC, TPR at a fixed
  FPR, and the one-run ε lower bound.
- :mod:`radpriv.audit.one_run`: the one-run audit of Steinke, Nasr & Jagielski (2023): p-value and ε lower
  bound from the correct guesses among the k₊ top / k₋ bottom scores; group privacy for repeated canaries.
- :mod:`radpriv.audit.report`: tables, figures and summary lines of an audit's results.
- :mod:`radpriv.audit.reconstruction`: masked-token reconstruction by an encoder through a probe MLM
  head (the bundled MiniLM has none), scored by embedding cosine similarity.
"""

from radpriv.audit.exposure import (exposure_from_scores, extrapolated_exposure, random_secrets,
                                    secret_format_space)
from radpriv.audit.mia import attack_metrics, membership_split, per_sample_bce, tpr_at_fpr
from radpriv.audit.one_run import (epsilon_lower_bound, group_privacy, guess_grid, max_certifiable_epsilon,
                                   one_run_audit, p_value)

__all__ = ["attack_metrics", "epsilon_lower_bound", "exposure_from_scores", "extrapolated_exposure", "group_privacy",
           "guess_grid", "max_certifiable_epsilon", "membership_split", "one_run_audit", "p_value", "per_sample_bce",
           "random_secrets", "secret_format_space", "tpr_at_fpr"]
