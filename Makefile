# auricle -- the two commands: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTEST_ARGS ?=
PI_CHECK_ARGS ?=
DEMO_STREAM ?= samples/speech_commands_stream.wav

.PHONY: demo test test-fast listen firmware bench pi-check dist wheel-check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# the device-side stack only: numpy, ai-edge-litert, sounddevice, soundfile
$(VENV)/.edge-installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[edge]'
	touch $@

# everything: training (TensorFlow, librosa, ...), conversion, tests
$(VENV)/.all-installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $@ $(VENV)/.edge-installed

demo: $(VENV)/.edge-installed
	$(BIN)/python -m edge.demo --stream $(DEMO_STREAM)

test: $(VENV)/.all-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.all-installed
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

listen: $(VENV)/.edge-installed
	$(BIN)/python -m edge.listen

firmware: $(VENV)/.all-installed
	$(BIN)/python -m tools.make_firmware

bench: $(VENV)/.all-installed
	$(BIN)/python -m benchmarks.latency --bundles firmware_assets/* --out results/

pi-check: $(VENV)/.edge-installed
	bash tools/pi_check.sh $(PI_CHECK_ARGS)

# the wheel and sdist a Pi user installs (python -m build; the wheel carries the device bundles)
dist: | $(BIN)/python
	$(BIN)/python -m pip install -q build
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# the device install as a Pi user gets it: the wheel with its [edge] extra into a fresh venv outside the
# checkout, then the demo and the listener run from another folder
wheel-check: dist
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PY) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/pip" install -q "$$(ls $(CURDIR)/dist/auricle-*.whl)[edge]"; \
	cd "$$tmp"; \
	venv/bin/auricle-demo; \
	venv/bin/auricle-demo --bundle esc10_mobilenet_edge --stream esc10_stream | tail -2; \
	stream=$$(venv/bin/python -c 'import edge.shipped as s; print(s.find_sample("speech_commands_stream"))'); \
	venv/bin/python -m edge.listen --file "$$stream" --json | tail -1

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
