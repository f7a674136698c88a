"""Run machinery shared by every algorithm: configs, seeding, logging, checkpoints, evaluation."""
