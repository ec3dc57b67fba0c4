# sb3-tom: `make train` trains the main agent, `make test` runs the test suite. Both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ENV ?= HalfCheetah-v4
STEPS ?= 15000
ALGO ?= mbpo_tom
SEED ?= 0
LOGDIR ?= logs

.PHONY: venv train test test-fast test-kernels-off test-oldest lint format clean bench bench-study bench-report

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[tests]"
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PY) examples/train.py --algo $(ALGO) --env $(ENV) --steps $(STEPS) --seed $(SEED) --log-dir $(LOGDIR)

test: venv
	$(PY) -m pytest -n 2 --durations=15 tests

# The fast tests against the oldest stable-baselines3, rl-zoo3 and gymnasium that setup.cfg admits (.ci/oldest.txt)
OLDEST_VENV ?= .venv-oldest
$(OLDEST_VENV)/.installed: setup.cfg pyproject.toml .ci/oldest.txt
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(OLDEST_VENV)/bin/python -m pip install --quiet -c .ci/oldest.txt -e ".[tests]"
	touch $@

test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -m pytest -n 2 -m "not slow" -p no:cacheprovider tests

# The inner loop: the unit tests, without the package installs, RL Zoo CLI runs, examples, study and learning tests
test-fast: venv
	$(PY) -m pytest -n 2 --durations=10 -m "not slow" tests

# The fast tests once more with the fast kernels and the written-out SAC gradient off (public PyTorch ops, autograd)
test-kernels-off: venv
	SB3_TOM_FAST_KERNELS=0 $(PY) -m pytest -n 2 -m "not slow" -p no:cacheprovider tests

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy sb3_tom

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv
	$(PY) benchmarks/throughput.py --quick

# The sample-efficiency study (many CPU hours): starts it, or resumes every run from its last checkpoint.
# STUDY_STEPS=30000 extends finished 15k-step runs; STUDY_JOBS=1 runs one at a time with all threads.
STUDY_STEPS ?= 15000
STUDY_JOBS ?= 2
bench-study: venv
	$(PY) benchmarks/sample_efficiency.py --steps $(STUDY_STEPS) --jobs $(STUDY_JOBS)
	$(PY) benchmarks/report.py --readme README.md

bench-report: venv
	$(PY) benchmarks/report.py --readme README.md

clean:
	rm -rf $(VENV) $(OLDEST_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
