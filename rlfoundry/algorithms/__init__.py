"""One file per algorithm. ALGORITHMS maps the CLI name to the class."""

from rlfoundry.algorithms.ddpg import DDPG
from rlfoundry.algorithms.dqn import DQN
from rlfoundry.algorithms.a2c import A2C
from rlfoundry.algorithms.off_policy_pg import OffPolicyPG
from rlfoundry.algorithms.ppo import PPO
from rlfoundry.algorithms.reinforce import REINFORCE
from rlfoundry.algorithms.sac import SAC
from rlfoundry.algorithms.tabular import SARSA, ExpectedSARSA, QLearning
from rlfoundry.algorithms.td3 import TD3
from rlfoundry.algorithms.trpo import TRPO

ALGORITHMS = {cls.name: cls for cls in (QLearning, SARSA, ExpectedSARSA, PPO, DQN, A2C, TRPO, REINFORCE, OffPolicyPG, DDPG, TD3, SAC)}

__all__ = ["A2C", "ALGORITHMS", "DDPG", "DQN", "ExpectedSARSA", "OffPolicyPG", "PPO", "QLearning", "REINFORCE", "SAC", "SARSA", "TD3", "TRPO"]
