"""Non-LLM baselines."""

from radpriv.baselines.rules import RuleLabeler

__all__ = ["RuleLabeler"]
