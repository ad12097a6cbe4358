"""Non-LLM baselines."""

from radpriv.baselines.rules import NO_RULES, RuleError, RuleLabeler, has_rules, rule_baseline

__all__ = ["NO_RULES", "RuleError", "RuleLabeler", "has_rules", "rule_baseline"]
