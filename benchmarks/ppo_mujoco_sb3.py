"""Stable-Baselines3's PPO with rlfoundry's MuJoCo preset, to tell a gap to RL Baselines3 Zoo's
published result apart from a difference between the libraries.

The settings are read from `rlfoundry/presets/ppo.yaml` (or, with `--zoo-hopper-v3`, the zoo's
tuned Hopper-v3 entry that the Hopper-v5 preset held before it was replaced) and mapped onto SB3's
PPO; `normalize_observations` + `normalize_rewards` become `VecNormalize(gamma=gamma)`, as the
zoo's `normalize: true` does. Evaluation as for rlfoundry (`rlf train` ends with it): 20
deterministic episodes with the observation statistics frozen, the evaluation env seeded 10000.
One seed per call (about 30 minutes on one core for the zoo's 256-wide networks):

    MUJOCO_GL=egl .venv/bin/python benchmarks/ppo_mujoco_sb3.py Hopper-v5 --zoo-hopper-v3 --seed 1 --log-dir /tmp/sb3-hopper
    MUJOCO_GL=egl .venv/bin/rlf train ppo Hopper-v5 --seed 1 --no-preset $(python benchmarks/ppo_mujoco_sb3.py --print-zoo-hopper-v3)

`--log-dir` keeps SB3's progress CSV (episode returns and lengths, approx_kl, clip_fraction).
"""

from __future__ import annotations

import argparse
import json
import time

EVALUATION_EPISODES = 20
EVALUATION_SEED = 10_000
# RL Baselines3 Zoo's ppo.yml, Hopper-v3 (tuned), with its normalize: true, in rlfoundry's field names.
ZOO_HOPPER_V3 = {
    "normalize_observations": True,
    "normalize_rewards": True,
    "n_envs": 1,
    "n_steps": 512,
    "batch_size": 32,
    "gamma": 0.999,
    "learning_rate": 9.80828e-05,
    "entropy_coef": 0.00229519,
    "clip_range": 0.2,
    "n_epochs": 5,
    "gae_lambda": 0.99,
    "max_grad_norm": 0.7,
    "value_coef": 0.835671,
    "log_std_init": -2.0,
    "orthogonal_init": False,
    "activation": "relu",
    "hidden_sizes": [256, 256],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env_id", nargs="?", choices=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--zoo-hopper-v3", action="store_true", help="the zoo's Hopper-v3 settings, not the preset's")
    parser.add_argument(
        "--print-zoo-hopper-v3", action="store_true", help="print those settings as rlf train --set options and exit"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's budget")
    parser.add_argument("--log-dir", default=None, help="write SB3's progress.csv here")
    arguments = parser.parse_args()
    if arguments.print_zoo_hopper_v3:
        print(" ".join(f"--set {name}={_option_value(value)}" for name, value in ZOO_HOPPER_V3.items()))
        return
    if arguments.env_id is None:
        parser.error("the env id is required")

    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize
    from torch import nn

    from rlfoundry.presets import load_preset

    torch.set_num_threads(1)
    preset = load_preset("ppo", arguments.env_id)
    config = ZOO_HOPPER_V3 if arguments.zoo_hopper_v3 else preset.config
    env = make_vec_env(arguments.env_id, n_envs=config["n_envs"], seed=arguments.seed)
    normalised = config["normalize_observations"] and config["normalize_rewards"]
    if normalised:
        env = VecNormalize(env, gamma=config["gamma"])
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=config["n_steps"],
        batch_size=config["batch_size"],
        gamma=config["gamma"],
        learning_rate=config["learning_rate"],
        ent_coef=config["entropy_coef"],
        clip_range=config["clip_range"],
        n_epochs=config["n_epochs"],
        gae_lambda=config["gae_lambda"],
        max_grad_norm=config["max_grad_norm"],
        vf_coef=config["value_coef"],
        seed=arguments.seed,
        policy_kwargs={
            "log_std_init": config["log_std_init"],
            "ortho_init": config["orthogonal_init"],
            "activation_fn": {"relu": nn.ReLU, "tanh": nn.Tanh}[config["activation"]],
            "net_arch": {"pi": list(config["hidden_sizes"]), "vf": list(config["hidden_sizes"])},
        },
    )
    if arguments.log_dir:
        model.set_logger(configure(arguments.log_dir, ["csv"]))
    start = time.perf_counter()
    model.learn(arguments.steps or preset.steps)
    seconds = time.perf_counter() - start
    evaluation_env = make_vec_env(arguments.env_id, n_envs=1, seed=EVALUATION_SEED)
    if normalised:
        evaluation_env = VecNormalize(evaluation_env, training=False, norm_reward=False)
        evaluation_env.obs_rms = env.obs_rms
    mean, std = evaluate_policy(model, evaluation_env, n_eval_episodes=EVALUATION_EPISODES, deterministic=True)
    print(f"sb3 ppo {arguments.env_id} seed {arguments.seed}: {mean:.1f} +- {std:.1f} ({seconds:.0f} s)")


def _option_value(value) -> str:
    """A config value as `rlf train --set` reads it, without spaces (the shell splits on them)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


if __name__ == "__main__":
    main()
