# The two commands of the README. Both install what they need (scripts/setup.sh), idempotently.
CARGO ?= cargo
PULMO := target/release/pulmo
export PULMO_PYTHON := $(CURDIR)/build/venv/bin/python

.PHONY: demo test setup build clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# Main job: `pulmo demo` generates a full-size synthetic study, starts the node on loopback, sends
# the study with pulmo's SCU, receives the SEGs, SR and overlay series on a stand-in PACS, prints the
# per-lobe table next to the truth; then every result goes through conformance/validate.
# It runs the reference models shipped in models/ (trained on synthetic phantoms only).
demo: build
	rm -rf build/demo
	$(PULMO) demo --out build/demo 2>build/demo.log
	conformance/validate build/demo/pacs/spool | tail -n 1

test: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets --locked -- -D warnings
	$(CARGO) test --release --locked
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} scripts/fuzz.sh

clean:
	rm -rf build target
