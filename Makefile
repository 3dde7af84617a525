# kvip-bgp: every target installs what it needs itself (venv, Debian packages).
# Lab and integration tests need root (network namespaces); CI runs as root.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
CONFIG  ?=
APT_PACKAGES := frr iproute2 systemd bird2 gobgpd valgrind
# make image (and its lab test): build with buildah on a debootstrap base, run with podman
# (runc: crun refuses this host's cgroup v1/v2 hybrid).
IMAGE_APT_PACKAGES := debootstrap buildah podman runc
IMAGE ?= kvip-bgp:0.1.0

.PHONY: install system-deps test unit lint lab bench clean help install-systemd soak docs image image-deps
DURATION ?= 30m

help:
	@echo "make lab      the fabric lab: FRR ToR with ECMP, 3 kvip-bgp nodes, a client, kubectl (CONFIG=overrides.yaml)"
	@echo "make test     install everything and run lint + every test"
	@echo "make unit     only the tests that need neither root nor FRR"
	@echo "make lint     ruff + mypy + the import contracts (setup.cfg [importlinter])"
	@echo "make image    build the container image with buildah (IMAGE=$(IMAGE)), no registry needed"
	@echo "make docs     regenerate docs/configuration.md and the chart's values.schema.json"
	@echo "make install  create $(VENV) with kvip-bgp and its test tools"
	@echo "make bench    convergence, latency, memory, CPU at 150/1,000/10,000 Services (~12 min)"
	@echo "              BENCH_ARGS=\"--repeat K --compare REV\": K alternating runs of this and REV, medians"
	@echo "make soak     DURATION=30m: churn in the lab; print RSS/thread/fd growth (not in CI)"

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test,lint]'
	touch $@

install: $(VENV)/.installed

# Debian packages for the lab (FRR as the peer; kubectl for make lab, from Debian's
# kubernetes-client when no kubectl is on PATH). Only installed when missing.
system-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# import-linter lives apart from the daemon's venv (see setup.cfg's lint extra); it only
# reads the source, so the project need not be installed there.
LINT_VENV ?= .venv-lint
$(LINT_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet 'import-linter>=2.17,<3'
	touch $@

lint: install $(LINT_VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy kvip_bgp
	PYTHONPATH=$(CURDIR) $(LINT_VENV)/bin/lint-imports

test: install system-deps image-deps lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

unit: install
	$(VENV)/bin/pytest -q -m "not lab"

# The fabric lab (kvip_bgp/testing/fabric.py): Ctrl-C removes every namespace again.
lab: install system-deps
	$(PY) -m kvip_bgp.testing.fabric_lab $(if $(CONFIG),--config $(CONFIG))

image-deps:
	@$(MAKE) --no-print-directory system-deps APT_PACKAGES="$(IMAGE_APT_PACKAGES)"

# The Dockerfile built by buildah on Debian bookworm from debootstrap (deploy/image/build.sh
# says why each flag is there); tests/test_image.py runs it in the lab.
image: image-deps
	IMAGE=$(IMAGE) sh deploy/image/build.sh

# docs/configuration.md and charts/kvip-bgp/values.schema.json come from the key table
# kvip_bgp/configfile/keys.py; tests/test_reference.py fails when they are stale.
docs: install
	$(PY) -m kvip_bgp.configfile.reference

# Bare metal: venv in /opt/kvip-bgp, unit in /etc/systemd/system, example config if absent.
install-systemd:
	sh deploy/systemd/install.sh

# Convergence, latency, memory and CPU at 150 / 1,000 / 10,000 Services against raw
# ExaBGP measured in the same run (root, ~12 min). BENCH_ARGS="--sizes 150" for less.
bench: install system-deps
	$(PIP) install --quiet -e '.[bench]'
	$(PY) -m bench.run $(BENCH_ARGS)

soak: install system-deps
	$(PY) soak/run.py --duration $(DURATION)

clean:
	$(PY) -m kvip_bgp.testing.netlab down 2>/dev/null || true
	rm -rf $(VENV) $(LINT_VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
