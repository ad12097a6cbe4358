"""Metrics, statistical tests and figures."""

from radpriv.evaluate.plots import confusion_grid, loss_curves, metric_bars_with_ci, privacy_utility_curve, roc_curves, show
from radpriv.evaluate.scoring import (STATES3, UNANSWERED, apply_category_bias, binarize, bootstrap_metric, class_set,
                                      calibrated_categories, class_set_note, fit_category_bias, fit_state_bias,
                                      compare_systems, correctness,
                                      fill_failures, per_class_f1, score_labels)
from radpriv.evaluate.stats import (cochrans_q, delong_auc_ci, delong_roc_test, holm,
                                    delong_placements, macro_auc_delong, macro_auc_delong_test, mcnemar_test,
                                    pairwise_mcnemar, trend_test)

__all__ = ["STATES3", "UNANSWERED", "apply_category_bias", "binarize", "calibrated_categories", "fit_category_bias", "fit_state_bias", "bootstrap_metric", "class_set", "class_set_note", "cochrans_q", "compare_systems", "confusion_grid",
           "correctness", "delong_auc_ci", "loss_curves", "delong_roc_test", "fill_failures", "holm",
           "delong_placements", "macro_auc_delong", "macro_auc_delong_test", "mcnemar_test",
           "metric_bars_with_ci", "pairwise_mcnemar", "per_class_f1",
           "privacy_utility_curve", "roc_curves", "score_labels", "show", "trend_test"]
