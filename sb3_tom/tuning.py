"""
The package's machine-level tunables in one place: how large a block of rows each memory-bound loop handles at a
time, and when the oneDNN matmuls are used. None of them changes a result (every chunked computation does the same
operations per row as an unchunked one, as the tests check); they trade peak memory and cache use against per-call
overhead. Measured effects are in ``benchmarks/RESULTS.md``. Modules read them at call time (``tuning.NAME``), so
they can be changed, or patched in tests, without reloading anything.
"""

#: Rows of a no-grad ensemble forward pass at a time (model rollouts, holdout evaluation): a chunk's hidden
#: activations stay in cache instead of streaming through main memory once per op.
INFERENCE_CHUNK_ROWS = 512

#: Rows of one policy pass when sampling actions for many states at once (100k rollout start states, TOM's dual
#: problem): bounds the 256-wide activations held at once.
POLICY_CHUNK_ROWS = 8192

#: Transitions per chunk when TOM computes the discriminator logits and dual residuals of the whole buffer.
RESIDUAL_CHUNK_ROWS = 65_536

#: Rows converted to float32 at a time when reading SB3's (float32 or float64) replay buffer: a 1M-row float64
#: buffer is never copied whole.
GATHER_CHUNK_ROWS = 65_536

#: Rows per chunk of the two passes that compute input means and standard deviations in float64.
STATISTICS_CHUNK_ROWS = 65_536

#: Columns of the ensemble's ``members x n_train`` bootstrap index matrix mapped to buffer rows at a time.
BOOTSTRAP_BLOCK_COLUMNS = 65_536

#: Smallest matrix dimension for which the dense-layer matmuls go through oneDNN: narrower products run faster through
#: ``torch.mm``, as oneDNN's fixed cost per call dominates them.
ONEDNN_MIN_FEATURES = 64
