# mp_slam_ros developer entry points.  No ROS needed: everything runs from a
# repo-local virtualenv (.venv/) that also holds colcon (colcon-common-extensions
# from PyPI), which builds and tests this ament_python package without ROS.
#
#   make venv       create/refresh .venv (python3 >= 3.10), editable install + test tools
#   make test       colcon build + colcon test (whole suite) + colcon test-result
#   make demo       render the two-lap room, full SLAM (VO + loop closure) in mixed and fp64, PGO studies, plots
#   make lint       ruff check
#   make bench-pgo  install the gtsam benchmark peer, run benchmarks/bench_pgo.py
#   make bench-ba   install the gtsam benchmark peer, run benchmarks/bench_ba.py (BAL problems)
#   make bench-ba-windows  run benchmarks/bench_ba_windows.py (VO window timing and accuracy)
#   make bench-vo   run benchmarks/bench_vo.py (VO accuracy and speed per precision: room + EuRoC)
#   make bench-loop run benchmarks/bench_loop.py (loop closure on the room) and bench_loop_pgo.py (PGO curve, 800 problems)
#   make demo-vo    render the synthetic two-lap room (mcap bag) and replay it through VO (mixed)
#   make bench-readme      copy the headline benchmark tables into README.md
#   make clean      remove build/ install/ log/ demo_out/ and egg-info (keeps .venv)
#   make distclean  clean + remove .venv
#
# Variables: PYTHON (interpreter used to create the venv, default python3),
# PYTEST_ARGS (extra pytest args for `make test`, e.g. PYTEST_ARGS=test/test_packaging.py).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
VBIN := $(VENV)/bin
VPY := $(VBIN)/python
STAMP := $(VENV)/.stamp
BENCH_STAMP := $(VENV)/.stamp-bench

BUILD_BASE := build
INSTALL_BASE := install
PYTEST_ARGS ?=

# Keep numba's on-disk cache out of the source tree (and out of site-packages).
export NUMBA_CACHE_DIR ?= $(CURDIR)/$(BUILD_BASE)/numba_cache
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# The venv's bin first on PATH so `colcon` (and the python it runs setup.py /
# pytest with) is the venv's.
VENV_PATH := $(CURDIR)/$(VBIN):$(PATH)

# `--paths .`: exactly this package; no crawling of .venv/, ../shared, etc.
COLCON_PKG := --paths .
COLCON_BASES := --build-base $(BUILD_BASE) --install-base $(INSTALL_BASE)

.PHONY: venv demo demo-vo test lint bench-pgo bench-ba bench-ba-windows bench-vo bench-loop bench-readme clean distclean

venv: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: '$(PYTHON)' not found. Install Python >= 3.10 (Debian/Ubuntu: apt-get install python3 python3-venv) or run 'make PYTHON=/path/to/python3.X ...'." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || { \
	  echo "error: mp_slam_ros needs Python >= 3.10, but '$(PYTHON)' is $$($(PYTHON) -c 'import sys; print(sys.version.split()[0])')." >&2; \
	  echo "       Install a newer python3 or run 'make PYTHON=python3.X ...'." >&2; exit 1; }
	@# Recreate the venv if it is missing or its interpreter no longer runs.
	@if ! $(VPY) -c 'import sys' >/dev/null 2>&1; then \
	  rm -rf $(VENV); \
	  echo "+ $(PYTHON) -m venv $(VENV)"; \
	  $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	    echo "error: '$(PYTHON) -m venv' failed. On Debian/Ubuntu install the venv module: apt-get install python3-venv" >&2; exit 1; }; \
	fi
	$(VPY) -m pip install --upgrade pip
	@# --use-pep517: PEP 660 editable install, which puts the mp-slam console
	@# script on .venv/bin.  A legacy `setup.py develop` install (old pip, no
	@# pyproject.toml) would honour setup.cfg's ROS-style script_dir and put it
	@# in .venv/lib/mp_slam_ros/ instead.
	@# setuptools comes in through colcon-core, which pins it (<80 at the time
	@# of writing: `setup.py develop`, used by --symlink-install, changed in 80).
	$(VPY) -m pip install --use-pep517 -e '.[test]' colcon-common-extensions ruff
	@test -x $(VBIN)/mp-slam || { echo "error: $(VBIN)/mp-slam was not generated" >&2; exit 1; }
	@# Keep colcon from ever crawling into the venv.
	touch $(VENV)/COLCON_IGNORE
	touch $@

demo: $(STAMP)
	$(VBIN)/mp-slam demo --out demo_out

demo-vo: $(STAMP)
	$(VBIN)/mp-slam synth --trajectory two_lap_room --formats mcap,tum --out demo_out/sequences
	$(VBIN)/mp-slam replay demo_out/sequences/room_two_laps_stereo_mcap --out demo_out/vo --precision mixed

# Build + test with colcon.  `colcon test` alone exits 0 on test failures, so
# --return-code-on-test-failure; `colcon test-result` also fails when any
# result file records a failure.  The recipe exits with the first non-zero
# status.
test: $(STAMP)
	@mkdir -p $(NUMBA_CACHE_DIR)
	PATH="$(VENV_PATH)" colcon build $(COLCON_PKG) $(COLCON_BASES) --symlink-install \
	  --event-handlers console_direct+
	@rc=0; \
	echo "+ colcon test $(COLCON_PKG) $(COLCON_BASES) --event-handlers console_direct+ --return-code-on-test-failure$(if $(strip $(PYTEST_ARGS)), --pytest-args $(PYTEST_ARGS))"; \
	PATH="$(VENV_PATH)" colcon test $(COLCON_PKG) $(COLCON_BASES) \
	  --event-handlers console_direct+ --return-code-on-test-failure \
	  $(if $(strip $(PYTEST_ARGS)),--pytest-args $(PYTEST_ARGS)) || rc=$$?; \
	echo "+ colcon test-result --test-result-base $(BUILD_BASE) --verbose"; \
	PATH="$(VENV_PATH)" colcon test-result --test-result-base $(BUILD_BASE) --verbose || { r=$$?; [ $$rc -ne 0 ] || rc=$$r; }; \
	if [ $$rc -ne 0 ]; then echo "make test: FAILED (exit $$rc)" >&2; fi; \
	exit $$rc

lint: $(STAMP)
	$(VBIN)/ruff check .

$(BENCH_STAMP): $(STAMP)
	$(VPY) -m pip install --use-pep517 -e '.[bench]'
	touch $@

bench-pgo: $(BENCH_STAMP)
	$(VPY) benchmarks/bench_pgo.py

bench-ba: $(BENCH_STAMP)
	$(VPY) benchmarks/bench_ba.py

bench-ba-windows: $(STAMP)
	$(VPY) benchmarks/bench_ba_windows.py

bench-vo: $(STAMP)
	$(VPY) benchmarks/bench_vo.py

bench-loop: $(STAMP)
	$(VPY) benchmarks/bench_loop.py
	$(VPY) benchmarks/bench_loop_pgo.py

bench-readme: $(STAMP)
	$(VPY) benchmarks/readme_tables.py

clean:
	rm -rf $(BUILD_BASE) $(INSTALL_BASE) log demo_out *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
