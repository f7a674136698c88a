# The README's two commands: `make train` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rebuilt when pyproject.toml changes, so a new dependency reaches an existing .venv.
INSTALLED := $(VENV)/.installed

.PHONY: train test test-slow setup clean bench-setup

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# The extras give the test suite MuJoCo, Box2D and Atari (ROMs ship inside ale-py).
	$(BIN)/python -m pip install --quiet -e '.[dev,mujoco,box2d,atari]'
	touch $(INSTALLED)

# The main job: PPO on CartPole-v1 with its preset; prints the evaluation return and the run directory.
train: $(INSTALLED)
	$(BIN)/rlf train ppo CartPole-v1

# The type check first (mypy: about 20 s from a cold .mypy_cache on two idle cores, 1-2 s warm), then the tests.
test: $(INSTALLED)
	$(BIN)/python -m mypy rlfoundry
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(INSTALLED)
	$(BIN)/python -m pytest -m slow -q

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache

# Side-by-side benchmarks against Stable-Baselines3 (not part of `make test`).
bench-setup: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[dev,mujoco,box2d,atari,bench]'
