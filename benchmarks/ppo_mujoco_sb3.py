"""Stable-Baselines3's PPO with rlfoundry's MuJoCo preset, to tell a gap to RL Baselines3 Zoo's
published result apart from a difference between the libraries.

The settings are read from `rlfoundry/presets/ppo.yaml` (the zoo's tuned HalfCheetah-v3 and
Hopper-v3 entries) and mapped onto SB3's PPO; `normalize_observations` + `normalize_rewards`
become `VecNormalize(gamma=gamma)`, as the zoo's `normalize: true` does. Evaluation as for
rlfoundry (`rlf train` ends with it): 20 deterministic episodes with the observation statistics
frozen, the evaluation env seeded 10000. One seed per call (about 30 minutes on one core):

    MUJOCO_GL=egl .venv/bin/python benchmarks/ppo_mujoco_sb3.py Hopper-v5 --seed 1 --log-dir /tmp/sb3-hopper
    MUJOCO_GL=egl .venv/bin/rlf train ppo Hopper-v5 --seed 1     # rlfoundry with the same preset

`--log-dir` keeps SB3's progress CSV (episode returns and lengths, approx_kl, clip_fraction).
"""

from __future__ import annotations

import argparse
import time

EVALUATION_EPISODES = 20
EVALUATION_SEED = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env_id", choices=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's budget")
    parser.add_argument("--log-dir", default=None, help="write SB3's progress.csv here")
    arguments = parser.parse_args()

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
    config = preset.config
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


if __name__ == "__main__":
    main()
