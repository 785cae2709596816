# mp_slam_ros developer entry points.  No ROS needed: everything runs from a
# repo-local virtualenv (.venv/) that also holds colcon (colcon-common-extensions
# from PyPI), which builds and tests this ament_python package without ROS.
#
#   make venv       create/refresh .venv (python3 >= 3.10) from requirements/lock.txt, editable install
#   make test       colcon build + colcon test (whole suite) + colcon test-result
#   make test-ros   the same inside a sourced ROS 2 (installed when absent): ros-marked and launch tests run
#   make test-oldest  the suite against the oldest supported versions (requirements/oldest.txt, .venv-oldest)
#   make test-latest  the suite against the newest versions setup.py allows (.venv-latest; not in CI)
#   make warmup     compile every numba kernel the precision presets use into the kernel cache (make venv does)
#   make lock       regenerate requirements/lock.txt and requirements/oldest.txt (uv pip compile)
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
# PYTEST_ARGS (extra pytest args for `make test`, e.g. PYTEST_ARGS=test/test_packaging.py),
# ROS_SETUP (the ROS 2 setup.bash of `make test-ros`, default /opt/ros2-min/setup.bash),
# ROS_DOMAIN_ID (the DDS domain of `make test-ros`, default 77: keep tests off other robots' domains).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:

PYTHON ?= python3
# The venv and the lock it is made from; test-oldest / test-latest use their own pair.
VENV ?= .venv
LOCK ?= requirements/lock.txt
VBIN := $(VENV)/bin
VPY := $(VBIN)/python
STAMP := $(VENV)/.stamp
BENCH_STAMP := $(VENV)/.stamp-bench

BUILD_BASE ?= build
INSTALL_BASE ?= install
PYTEST_ARGS ?=

# make test-ros: a minimal ROS 2 Jazzy (rclpy, launch_testing, rosbag2, ...), see README.
ROS_SETUP ?= /opt/ros2-min/setup.bash
ROS_INSTALLER ?= ../shared/ros2/install.sh
export ROS_DOMAIN_ID ?= 77

export PIP_DISABLE_PIP_VERSION_CHECK := 1
# The kernel cache: the per-user one the CLI and the nodes use ($XDG_CACHE_HOME/mp_slam_ros or
# ~/.cache/mp_slam_ros), unless NUMBA_CACHE_DIR is given (test-oldest keeps its own numba's apart).
ifdef NUMBA_CACHE_DIR
export NUMBA_CACHE_DIR
endif

# The venv's bin first on PATH so `colcon` (and the python it runs setup.py /
# pytest with) is the venv's; the recipe's own PATH after it (test-ros adds ROS 2's there).
VENV_PATH = $(CURDIR)/$(VBIN):$$PATH

# `--paths .`: exactly this package; no crawling of .venv/, ../shared, etc.
COLCON_PKG := --paths .
# Recursive (=): test-ros and test-oldest set their own bases.
COLCON_BASES = --build-base $(BUILD_BASE) --install-base $(INSTALL_BASE)

.PHONY: venv warmup lock test-ros test-oldest test-latest demo demo-vo test lint bench-pgo bench-ba bench-ba-windows bench-vo bench-loop bench-readme clean distclean

venv: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml $(LOCK)
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
	$(VPY) -m pip install --upgrade 'pip>=23.1'
	@# The exact versions tested (LOCK), then this package without its dependencies.
	@# --use-pep517: PEP 660 editable install, which puts the mp-slam console
	@# script on .venv/bin.  A legacy `setup.py develop` install (old pip, no
	@# pyproject.toml) would honour setup.cfg's ROS-style script_dir and put it
	@# in .venv/lib/mp_slam_ros/ instead.
	$(VPY) -m pip install -r $(LOCK)
	$(VPY) -m pip install --no-deps --use-pep517 -e .
	@# pip check: the lock and setup.py's ranges agree.
	$(VPY) -m pip check
	@test -x $(VBIN)/mp-slam || { echo "error: $(VBIN)/mp-slam was not generated" >&2; exit 1; }
	@# Keep colcon from ever crawling into the venv.
	touch $(VENV)/COLCON_IGNORE
	@# Compile the kernels now, once, rather than inside the first solve of every first run, and
	@# keep a copy in the venv that seeds the cache of every other user of this install.
	$(VBIN)/mp-slam warmup --install-seed
	touch $@

warmup: $(STAMP)
	$(VBIN)/mp-slam warmup --install-seed

demo: $(STAMP)
	$(VBIN)/mp-slam demo --out demo_out

demo-vo: $(STAMP)
	$(VBIN)/mp-slam synth --trajectory two_lap_room --formats mcap,tum --out demo_out/sequences
	$(VBIN)/mp-slam replay demo_out/sequences/room_two_laps_stereo_mcap --out demo_out/vo --precision mixed

# Build + test with colcon.  `colcon test` alone exits 0 on test failures, so
# --return-code-on-test-failure; `colcon test-result` also fails when any
# result file records a failure.  The recipe exits with the first non-zero
# status.
COLCON_BUILD = PATH="$(VENV_PATH)" colcon build $(COLCON_PKG) $(COLCON_BASES) --symlink-install \
	  --event-handlers console_direct+
COLCON_TEST = rc=0; \
	echo "+ colcon test $(COLCON_PKG) $(COLCON_BASES) --event-handlers console_direct+ --return-code-on-test-failure$(if $(strip $(PYTEST_ARGS)), --pytest-args $(PYTEST_ARGS))"; \
	PATH="$(VENV_PATH)" colcon test $(COLCON_PKG) $(COLCON_BASES) \
	  --event-handlers console_direct+ --return-code-on-test-failure \
	  $(if $(strip $(PYTEST_ARGS)),--pytest-args $(PYTEST_ARGS)) || rc=$$?; \
	echo "+ colcon test-result --test-result-base $(BUILD_BASE) --verbose"; \
	PATH="$(VENV_PATH)" colcon test-result --test-result-base $(BUILD_BASE) --verbose || { r=$$?; [ $$rc -ne 0 ] || rc=$$r; }; \
	if [ $$rc -ne 0 ]; then echo "make $@: FAILED (exit $$rc)" >&2; fi; \
	exit $$rc

test: $(STAMP)
	$(COLCON_BUILD)
	@$(COLCON_TEST)

# The whole suite inside a sourced ROS 2: the `ros`-marked tests and the launch tests
# (test/test_launch_*.py: real nodes, DDS on this host only) run instead of skipping.
# The venv's interpreter runs everything; the ROS 2 Python packages come from ROS_SETUP.
test-ros: $(STAMP)
	@if [ ! -f "$(ROS_SETUP)" ]; then \
	  if [ -f "$(ROS_INSTALLER)" ]; then echo "+ bash $(ROS_INSTALLER)"; bash "$(ROS_INSTALLER)"; \
	  else echo "error: no ROS 2 at $(ROS_SETUP) and no installer at $(ROS_INSTALLER); set ROS_SETUP=/opt/ros/jazzy/setup.bash" >&2; exit 1; fi; \
	fi
	@set +u; source "$(ROS_SETUP)"; set -u; \
	export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; \
	echo "== ROS 2 $${ROS_DISTRO:-?} from $(ROS_SETUP), ROS_DOMAIN_ID=$$ROS_DOMAIN_ID, discovery on this host only"; \
	$(COLCON_BUILD) || exit $$?; \
	set +u; source $(INSTALL_BASE)/local_setup.bash; set -u; \
	$(COLCON_TEST)

test-ros: BUILD_BASE = build-ros
test-ros: INSTALL_BASE = install-ros

# The suite against the oldest supported versions, in its own venv, build and kernel cache.
test-oldest:
	$(MAKE) --no-print-directory VENV=.venv-oldest LOCK=requirements/oldest.txt BUILD_BASE=build-oldest \
	  INSTALL_BASE=install-oldest NUMBA_CACHE_DIR=$(CURDIR)/build-oldest/numba_cache test

# The suite against the newest versions setup.py allows (not locked, not in CI).
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --upgrade pip
	.venv-latest/bin/python -m pip install --upgrade --use-pep517 -e '.[test]' -r requirements/tools.in
	touch .venv-latest/COLCON_IGNORE .venv-latest/.stamp
	.venv-latest/bin/python -m pip freeze --exclude-editable
	$(MAKE) --no-print-directory VENV=.venv-latest BUILD_BASE=build-latest INSTALL_BASE=install-latest \
	  NUMBA_CACHE_DIR=$(CURDIR)/build-latest/numba_cache test

# requirements/lock.txt: the exact versions of every run; requirements/oldest.txt: setup.py's floors.
lock: $(STAMP)
	$(VBIN)/uv pip compile setup.py --extra test requirements/tools.in --python-version 3.11 \
	  --custom-compile-command "make lock" -q -o requirements/lock.txt
	$(VBIN)/uv pip compile setup.py --extra test requirements/tools.in requirements/oldest.in --python-version 3.11 \
	  --custom-compile-command "make lock" -q -o requirements/oldest.txt

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
	rm -rf $(BUILD_BASE) $(INSTALL_BASE) build-* install-* log demo_out *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .venv-oldest .venv-latest
