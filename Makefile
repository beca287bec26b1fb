# The two commands of the README. Both install what they need (scripts/setup.sh), idempotently.
CARGO ?= cargo
PULMO := target/release/pulmo
export PULMO_PYTHON := $(CURDIR)/build/venv/bin/python

.PHONY: demo test setup build clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# Main job. Until `pulmo demo` exists (end-to-end issue): a full-size synthetic study with extra
# series in random file order; pulmo reads it and says which series it would measure and why, then
# analyses it with stand-in models (exit 3, "analysed with warnings", is expected from those).
demo: build
	rm -rf build/demo
	$(PULMO) phantom --out build/demo/study --seed 7 --size full --severity severe --extra-series --shuffle
	$(PULMO) inspect build/demo/study/dicom
	@echo "--- pulmo analyze with STAND-IN threshold models (not the reference models; not measurements)"
	$(PULMO_PYTHON) tests/py/make_models.py build/demo/models >/dev/null
	printf '[inference]\nmodels_dir = "build/demo/models/set"\n' > build/demo/pulmo.toml
	$(PULMO) --config build/demo/pulmo.toml analyze build/demo/study/dicom --out build/demo/out || [ $$? -eq 3 ]
	@echo "demo: study, truth/ and preview/ PNGs in build/demo/study; findings in build/demo/out"

test: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets --locked -- -D warnings
	$(CARGO) test --release --locked

clean:
	rm -rf build target
