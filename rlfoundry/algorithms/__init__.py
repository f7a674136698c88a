"""One file per algorithm. ALGORITHMS maps the CLI name to the class."""

from rlfoundry.algorithms.tabular import SARSA, ExpectedSARSA, QLearning

ALGORITHMS = {cls.name: cls for cls in (QLearning, SARSA, ExpectedSARSA)}

__all__ = ["ALGORITHMS", "ExpectedSARSA", "QLearning", "SARSA"]
