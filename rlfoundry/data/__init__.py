"""Experience storage: on-policy rollouts (`rlfoundry.data.rollout`) and the off-policy replay
buffer (`rlfoundry.data.replay`); typed batches with their shapes in the docstrings."""
