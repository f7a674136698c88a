"""Seed 002's three questions, measured: bias and variance of the importance-sampled gradients.

Samples many episodes of a small random MDP under pi_theta, and estimates the gradient at
theta' = theta + delta (delta ~ N(0, sigma^2) per logit) with each importance ratio. The
expectations are exact (tests/policy_gradient_sampling.py derives them from the MDP's model);
the variances are sample variances of the per-episode gradients. Prints markdown tables for
docs/algorithms/off_policy_pg.md.

    .venv/bin/python benchmarks/off_policy_pg_variance.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

# The episode sampler and the exact expectations are the exact tests' (tests/policy_gradient_sampling.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from policy_gradient_sampling import (  # noqa: E402
    estimator_weights,
    expected_off_policy_gradient,
    numpy_importance_weights,
    per_episode_gradients,
    random_terminating_mdp,
    sample_episodes,
    trajectory_ratios,
)

EPISODES = 100_000
BATCH = 16  # episodes per gradient estimate, for the mean squared error column
GAMMA = 0.8
VARIANTS = [("trajectory", None), ("trajectory", 2.0), ("prefix", None), ("per_step", None)]


def measure(termination_probability: float, sigma: float) -> list[str]:
    mdp = random_terminating_mdp(6, 4, 3, GAMMA, termination_probability, reward_mean=1.0)
    logits = np.random.default_rng(11).normal(size=(mdp.n_states, mdp.n_actions))
    target_logits = logits + np.random.default_rng(23).normal(scale=sigma, size=logits.shape)
    exact = mdp.policy_gradient(target_logits)
    rng = np.random.default_rng(5)
    # On-policy reference: REINFORCE's variance with episodes of theta' itself.
    own = sample_episodes(mdp, target_logits, EPISODES, rng, 2000)
    own_variance = per_episode_gradients(
        target_logits, own, estimator_weights(own, GAMMA, "reward_to_go", True, "none")
    ).var(axis=0).sum()
    episodes = sample_episodes(mdp, logits, EPISODES, rng, 2000)
    weights = estimator_weights(episodes, GAMMA, "reward_to_go", True, "none")
    ratios = trajectory_ratios(target_logits, logits, episodes)
    products = np.prod(ratios, axis=0)
    step_ratios = ratios[episodes.mask]  # one per step taken; each has mean 1 under theta
    rows = []
    for ratio, max_weight in VARIANTS:
        importance = numpy_importance_weights(ratios, ratio)
        if max_weight is not None:
            importance = np.minimum(importance, max_weight)
        gradients = per_episode_gradients(target_logits, episodes, importance * weights)
        if max_weight is None:
            expectation = expected_off_policy_gradient(mdp, target_logits, logits, ratio)
        else:  # no closed form: the sample mean (its own noise is ~1% of the gradient here)
            expectation = gradients.mean(axis=0)
        bias = np.linalg.norm(expectation - exact)
        variance = gradients.var(axis=0).sum()
        cosine = (expectation * exact).sum() / np.linalg.norm(expectation) / np.linalg.norm(exact)
        error = np.sqrt(bias**2 + variance / BATCH) / np.linalg.norm(exact)
        name = ratio if max_weight is None else f"{ratio}, max_weight {max_weight:g}"
        rows.append(
            f"| {1 / termination_probability:.1f} | {sigma:g} | {name} | {bias / np.linalg.norm(exact):.3f} | "
            f"{cosine:.3f} | {variance / own_variance:.2f} | {error:.2f} |"
        )
    effective = products.sum() ** 2 / (products**2).sum() / EPISODES
    summary = (
        f"| {1 / termination_probability:.1f} | {sigma:g} | {(step_ratios < 1).mean():.3f} | {np.log(step_ratios).mean():.3f} | "
        f"{np.median(products):.3f} | {(products < 0.1).mean():.3f} | "
        f"{(products > 10).mean():.4f} | {products.max():.3g} | {effective:.3f} |"
    )
    return rows, summary


def main() -> None:
    estimator_rows, product_rows = [], []
    for termination_probability in (0.3, 0.1):
        for sigma in (0.25, 0.5, 1.0):
            rows, summary = measure(termination_probability, sigma)
            estimator_rows += rows
            product_rows.append(summary)
    print(
        "| mean episode length | sigma | ratio | relative bias | cosine to exact | variance / on-policy | "
        f"relative RMS error, m = {BATCH} |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(estimator_rows))
    print()
    print(
        "| mean episode length | sigma | P(rho_t < 1) per step | mean log rho_t per step | median prod rho | "
        "P(prod < 0.1) | P(prod > 10) | max prod | effective sample fraction |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(product_rows))


if __name__ == "__main__":
    main()
