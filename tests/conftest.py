import os

import matplotlib
import torch as th

matplotlib.use("Agg")

# pytest-xdist runs one worker per core: one torch thread each avoids oversubscribing the CPU
if os.environ.get("PYTEST_XDIST_WORKER"):
    th.set_num_threads(1)


# Tiny MBPO settings so that a few hundred env steps run in seconds (shared by the MBPO and TOM tests)
TINY_MBPO = dict(
    gradient_steps=1,
    batch_size=64,
    ensemble_size=3,
    num_elites=2,
    dynamics_hidden_sizes=[32, 32],
)
