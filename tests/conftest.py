import os

import pytest

# Its asserts compare two checkpoints: pytest should show what differs, as in a test module.
pytest.register_assert_rewrite("checkpoint_checks")

# Keep torch from oversubscribing the 2-core CI machine when tests run networks.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
