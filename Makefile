# Two commands for a new user: `make demo` (install + main job) and `make test` (install + tests).
PY ?= python3
PIP := $(PY) -m pip
OUT ?= runs/demo

.PHONY: install data toolchains demo test test-fast test-sanitize test-wheel lint docs bench

install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,all]'
	-@$(MAKE) -s data
	-@$(MAKE) -s toolchains

# Fashion-MNIST ships as a Debian package; without it hybnn downloads the files on first use.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
		echo "note: dataset-fashion-mnist not installed; hybnn will download Fashion-MNIST when online"; \
	fi

# Cross compilers and qemu for the C export's tests (tests/engine/test_c_export.py and
# test_cortex_m4.py, which skip without them) and bench/embedded.py: aarch64 under qemu-user,
# Cortex-M4 with newlib, and Cortex-M4 firmware run on QEMU's mps2-an386 board.
TOOLCHAINS := gcc-aarch64-linux-gnu qemu-user gcc-arm-none-eabi libnewlib-arm-none-eabi \
	qemu-system-arm
toolchains:
	@if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null || \
	    ! command -v arm-none-eabi-gcc >/dev/null || [ ! -d /usr/lib/arm-none-eabi/newlib ] || \
	    ! command -v qemu-system-arm >/dev/null; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			(apt-get install -y -qq $(TOOLCHAINS) >/dev/null 2>&1 || \
			 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(TOOLCHAINS) >/dev/null 2>&1)) || \
			echo "note: $(TOOLCHAINS) not installed; the aarch64 and Cortex-M4 C export tests skip"; \
		else echo "note: no root apt-get; the aarch64 and Cortex-M4 C export tests skip"; fi; \
	fi

demo: install
	hybnn reproduce --out $(OUT)

lint:
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy src/hybnn

# The documentation site from docs/ (mkdocs.yml) into build/site; --strict fails on a broken
# link, anchor or API reference. A few seconds.
docs:
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/site

# Everything, as CI runs it.
test: install lint
	$(PY) -m pytest -q

# A few minutes (about 4 on 2 busy cores): no Ray, deployment, kill -9, reproduce or whole-CLI subprocess runs (slow).
test-fast: lint
	$(PY) -m pytest -q -m "not slow"

# tests/engine against the C extension built with AddressSanitizer + UBSan (build/sanitize).
test-sanitize:
	PY=$(PY) scripts/engine_sanitize.sh

# Long: about an hour on 2 cores. Each script writes its own section of BENCHMARKS.md.
bench: install
	$(PY) -m bench.hybnn_targets
	$(PY) -m bench.engine
	$(PY) -m bench.embedded
	$(PY) -m bench.federated
	$(PY) -m bench.rebnn --out runs/study-rebnn --no-progress

# The sdist and an auditwheel-tagged wheel, installed (not editable) into a runtime-only venv
# (no torch) and a venv with every extra; a few minutes, most of it installing torch.
test-wheel:
	PY=$(PY) scripts/wheel_check.sh
