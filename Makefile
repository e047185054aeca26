PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip compiles what it installs to bytecode: it takes a good share of the install's time, but where Python may not
# write bytecode (PYTHONDONTWRITEBYTECODE, as on many CI machines) every process would compile numpy, pyarrow and
# the rest from source at each start, seconds each, and the tests start hundreds.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
	--config-settings editable_mode=compat
# The project's own packages (an editable install, which pip does not compile): where Python may not write
# bytecode, each process would compile them from source at every start, and the tests and benchmarks start
# hundreds (a fresh clone's `make test`: 17 s less CPU in all with them compiled first). Only changed files
# recompile; quiet but for a file that does not compile, which it names with the error.
PACKAGES := flightcast flight_server http_api pipelines spicepod harness bench
COMPILE := $(BIN)/python -m compileall -q $(PACKAGES)

RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test
# Extra flags for `flightcast run`, e.g. make run RUN_ARGS='--http 127.0.0.1:3100 --flight 127.0.0.1:0'
RUN_ARGS ?=

.PHONY: run test fuzz bench lint clean

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "flightcast needs Python 3.10+"'
	$(PYTHON) -m venv $(VENV)

# The runtime dependencies only: what `make run` needs.
$(RUNTIME_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e .
	touch $@

# The runtime with the test extras (pytest, schemathesis, ruff): what `make test`, `make fuzz` and `make lint`
# need. One pip run for both (a second resolves and checks everything again); the runtime is then installed too.
$(TEST_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e '.[test]'
	touch $(RUNTIME_STAMP) $@

run: $(RUNTIME_STAMP)
	$(COMPILE)
	$(BIN)/flightcast run --spicepod spicepod.yaml $(RUN_ARGS)

# Two workers, each taking whole files (a module's servers and trained models are set up once): most tests
# wait on servers and subprocesses, so two share two cores well. Files are handed out in collection order, the
# longest first (tests/conftest.py), not xdist's default of the files with the most tests first.
test: $(TEST_STAMP)
	$(COMPILE)
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

fuzz: $(TEST_STAMP)
	$(COMPILE)
	FLIGHTCAST_FUZZ=full $(BIN)/python -m pytest -m "fuzz or slow"

# Every benchmark's requirements (the bench extra: peers, ADBC, selenium, Dask); a missing one fails its module.
# The page benchmark also needs the system's chromium and chromium-driver (see .ci/run).
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(RUNTIME_STAMP)
	$(PIP) -e '.[bench]'
	touch $@

bench: $(BENCH_STAMP)
	$(COMPILE)
	$(BIN)/python -m bench

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .flightcast
