import os

import matplotlib
import torch as th

matplotlib.use("Agg")

# pytest-xdist runs one worker per core: one torch thread each avoids oversubscribing the CPU
if os.environ.get("PYTEST_XDIST_WORKER"):
    th.set_num_threads(1)
