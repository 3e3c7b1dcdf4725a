# Two entry points do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check setup bench clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 resolves to the CPU wheel on this machine's local disk (see README, "Set-up").
	$(BIN)/pip install -q -e '.[train,cpu,dev]'
	# an editable install gets no bytecode from pip; where PYTHONDONTWRITEBYTECODE is set (many containers) every
	# command would recompile bevctl on start-up (check-ckpt 0.29 s instead of 0.20 s on a slow machine)
	$(BIN)/python -m compileall -q bevctl model >/dev/null
	touch $(STAMP)

setup: $(STAMP)

# The main job on the embedded default: synthetic nuScenes-format data, tiny model, CPU, a few minutes.
# The run is named here, so the last step plots this run and not whichever was started last.
DEMO_RUN := demo-$(shell date +%Y%m%d-%H%M%S)
demo: $(STAMP)
	$(BIN)/bevctl doctor --phase demo
	$(BIN)/bevctl start demo --yes --local --wait --name $(DEMO_RUN)
	$(BIN)/bevctl watch $(DEMO_RUN) --once --plot runs/$(DEMO_RUN)/loss.png

# The whole test suite (CI runs exactly this through .ci/run).
test: $(STAMP)
	bash tests/setup_extras.sh
	$(BIN)/python -m pytest -q tests

# The quick tier for development loops (no daemons, no mmcv oracle, no multi-minute training).
check: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not docker and not mmdet and not mpi and not slurm" tests

bench: $(STAMP)
	$(BIN)/python bench/run_all.py
