"""Business rules as data: GoRules JDM decision graphs, evaluated by zen-engine."""

from orderhub.adapters.rules.engine import Evaluation, RuleEngine, RuleError, default_content

__all__ = ["Evaluation", "RuleEngine", "RuleError", "default_content"]
