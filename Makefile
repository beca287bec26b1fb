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
# series in random file order, then pulmo reads it and says which series it would measure and why.
demo: build
	rm -rf build/demo
	$(PULMO) phantom --out build/demo/study --seed 7 --size full --severity severe --extra-series --shuffle
	$(PULMO) inspect build/demo/study/dicom
	@echo "demo: study, truth/ and preview/ PNGs in build/demo/study"

test: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets --locked -- -D warnings
	$(CARGO) test --release --locked

clean:
	rm -rf build target
