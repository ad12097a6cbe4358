"""Tables, figures and summary lines of a privacy audit, computed from its runs and measurements (causal-LM
runs, exposures, membership results, reconstructions), so every figure shown can be recomputed from what
was measured.
"""

from __future__ import annotations

import math

import numpy as np

from radpriv.audit.one_run import group_privacy

CHANCE_EXPOSURE = 1 / math.log(2)  # mean exposure of a secret the model never saw (bits)


def repeat_counts(frame) -> dict:
    """{secret: k}: how many training reports carry each canary, read from the data's ``canary`` column."""
    c = frame.loc[frame["split"] == "train", "canary"].fillna("").astype(str)
    return {str(s): int(k) for s, k in c[c != ""].value_counts().sort_index().items()}


def lm_runs_table(lm_runs: dict):
    import pandas as pd

    return pd.DataFrame([{"model": name, "ε (accountant)": r.epsilon, "δ": r.accounting.get("delta"),
                          "training sequences": r.n_train, "seconds": round(r.seconds, 1),
                          "val loss before": r.history[0]["val_loss"], "val loss after": r.history[-1]["val_loss"],
                          "train loss (last epoch)": r.history[-1]["train_loss"], "‖LoRA B‖ after": round(r.lora_b_norm, 3),
                          "σ": r.accounting.get("noise_multiplier"), "steps": r.accounting.get("steps"),
                          "per-sample grads ok": r.per_sample_grads_ok} for name, r in lm_runs.items()])


def inserted_label(k) -> str:
    return f"k = {int(k)}" if int(k) > 0 else "never (control)"


def exposure_summary(exposure, order):
    """Mean sampled exposure per model (rows, in ``order``) and repetition group (columns, k descending;
    the never-inserted controls last)."""
    tab = exposure.assign(inserted=exposure.k.map(inserted_label))
    ks = sorted(exposure.k.unique(), reverse=True)
    cols = [inserted_label(k) for k in ks if k > 0] + ([inserted_label(0)] if 0 in ks else [])
    return tab.pivot_table(index="model", columns="inserted", values="exposure", aggfunc="mean").reindex(order)[cols]


def group_privacy_table(lm_runs: dict, counts: dict):
    """What DP promises a canary repeated k times: (kε, k·e^{(k−1)ε}·δ) for each DP run and each k in the
    data (the privacy unit of DP-SGD is one training sequence; a canary in k reports is a group of k)."""
    import pandas as pd

    rows = []
    for name, r in lm_runs.items():
        if math.isinf(r.epsilon):
            continue
        for k in sorted(set(counts.values())):
            ge, gd = group_privacy(r.epsilon, r.accounting["delta"], k)
            rows.append({"model": name, "k": k, "ε": r.epsilon, "δ": r.accounting["delta"], "group ε (kε)": ge,
                         "group δ (k·e^((k−1)ε)·δ)": gd})
    return pd.DataFrame(rows)


def exposure_figure(exposure, order, dp_models, n_candidates: int):
    """Left: exposure against the number of insertions k; right: exposure against ε per k (dashed:
    non-private)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.pointplot(data=exposure, x="k", y="exposure", hue="model", hue_order=order, errorbar=None, dodge=0.3, ax=axes[0])
    axes[0].axhline(CHANCE_EXPOSURE, ls=":", c="grey", lw=1)
    axes[0].axhline(math.log2(n_candidates + 1), ls="--", c="grey", lw=1)
    axes[0].set_xlabel("times the canary was inserted (k; 0 = never)")
    axes[0].set_ylabel("exposure (bits)")
    axes[0].set_title("Exposure vs repetitions")
    axes[0].legend(fontsize=7)
    fin = exposure[exposure.model.isin(dp_models) & (exposure.k > 0)].copy()
    fin["ε"] = fin.epsilon.replace(math.inf, np.nan)
    fin["repetitions"] = fin.k.map(inserted_label)
    ks = sorted(fin.k.unique())
    pal = dict(zip([inserted_label(k) for k in ks], sns.color_palette("viridis", len(ks))))
    dp_rows = fin[fin["ε"].notna()]
    if len(dp_rows):
        sns.lineplot(data=dp_rows, x="ε", y="exposure", hue="repetitions", hue_order=list(pal), palette=pal,
                     marker="o", errorbar=None, ax=axes[1])
    for kk, g in fin[fin["ε"].isna()].groupby("repetitions"):
        axes[1].axhline(g.exposure.mean(), ls="--", lw=1, color=pal[kk])
    axes[1].set_xscale("log")
    axes[1].set_xlabel("ε (log scale; dashed: non-private)")
    axes[1].set_ylabel("exposure (bits)")
    axes[1].set_title("Exposure vs ε")
    fig.tight_layout()
    return fig


def completions_table(models: dict, tok, canaries, max_new_tokens: int = 10):
    """Each model's greedy continuation of the context of the most- and the least-repeated inserted canary."""
    import pandas as pd

    from radpriv.audit.causal_lm import complete

    ins = [c for c in canaries if c["k"] > 0]
    rows = []
    for c in [max(ins, key=lambda c: c["k"]), min(ins, key=lambda c: c["k"])]:
        row = {"k": c["k"], "secret": c["secret"], "context (end)": "…" + c["context"][-70:]}
        for name, model in models.items():
            row[name] = complete(model, tok, c["context"], max_new_tokens=max_new_tokens).strip()
        rows.append(row)
    return pd.DataFrame(rows).T


def mia_roc_figure(scores: dict):
    """ROC curves of both attacks against every target. ``scores[name] = (member, loss, calibrated)``."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (j, attack) in zip(axes, [(1, "loss threshold"), (2, "reference-calibrated")]):
        for name, sc in scores.items():
            f, tp, _ = roc_curve(sc[0], sc[j])
            ax.plot(f, tp, label=f"{name} (AUC {roc_auc_score(sc[0], sc[j]):.2f})")
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"Membership inference: {attack}")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def epsilon_comparison(mia_table, order):
    """Per target: the better attack's one-run ε lower bound beside the accountant's ε at the audit's δ
    (the claim tested) and at the run's δ."""
    import pandas as pd

    best = (mia_table.sort_values(["eps_lower_bound", "auc"], ascending=False).groupby("model", sort=False).head(1)
            .set_index("model").reindex(list(order)))
    out = pd.DataFrame({"accountant ε (run δ)": best.epsilon, "run δ": best["delta"],
                        "accountant ε at audit δ": best.epsilon_at_audit_delta, "audit δ": best.audit_delta,
                        "one-run ε lower bound (better attack)": best.eps_lower_bound,
                        "most a perfect attack could show": best.max_certifiable,
                        "attack": best.attack, "guesses (k₊ + k₋)": best.guesses, "correct": best.correct,
                        "audit reports m": best.m, "AUC": best.auc, "TPR @ 1% FPR": best["tpr_at_0.01_fpr"]})
    out["bound ≤ accountant"] = out["one-run ε lower bound (better attack)"] <= out["accountant ε at audit δ"]
    return out


def reconstruction_figure(rec, order):
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(8, 3.8))
    sns.barplot(data=rec, y="encoder", x="cosine", hue="membership", order=list(order), errorbar=("ci", 95), ax=ax)
    ax.set_xlim(max(0.0, rec.cosine.min() - 0.02), 1.0)
    ax.set_xlabel("cosine(original findings, reconstruction)")
    ax.set_ylabel("")
    ax.set_title("Reconstruction similarity")
    fig.tight_layout()
    return fig


def summary_lines(lm_runs: dict, exposure, eps_cmp, counts: dict, n_candidates: int, confidence: float) -> list[str]:
    """The summary's bullet points, every number read from the tables above (the repetition counts k from
    the data)."""
    ks = sorted(set(counts.values()), reverse=True)
    lines = []
    for name, r in lm_runs.items():
        e = exposure[exposure.model == name]
        per_k = ", ".join(f"k={k} {e[e.k == k].exposure.mean():.2f}" for k in ks)
        line = (f"- causal LM **{name}**: mean exposure {per_k} bits, never inserted {e[e.k == 0].exposure.mean():.2f} "
                f"(max {math.log2(n_candidates + 1):.2f}); val loss {r.history[-1]['val_loss']:.2f}.")
        if not math.isinf(r.epsilon):
            line += (" Group privacy: a canary in k reports is protected at " +
                     ", ".join(f"{k}ε = {group_privacy(r.epsilon, r.accounting['delta'], k)[0]:.3g}" for k in ks) + ".")
        lines.append(line)
    for name, row in eps_cmp.iterrows():
        acc = row["accountant ε at audit δ"]
        lines.append(f"- classifier **{name}**: better attack AUC {row['AUC']:.2f}, TPR@1%FPR {row['TPR @ 1% FPR']:.2f}; "
                     f"one-run ε ≥ {row['one-run ε lower bound (better attack)']:.2f} ({confidence:.0%} confidence, "
                     f"δ = {row['audit δ']:g}, {int(row['audit reports m'])} audit reports; at most "
                     f"{row['most a perfect attack could show']:.2f} could be shown) vs accountant ε "
                     f"{acc:.3g} at that δ.")
    return lines
