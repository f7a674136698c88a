import os

# Keep torch from oversubscribing the 2-core CI machine when tests run networks.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
