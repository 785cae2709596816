"""Shared pytest fixtures and markers for mp_slam_ros.

Works the same under plain ``pytest`` (from the repo root) and under
``colcon test`` (which runs pytest with the package's source directory as the
working directory; this file is then still the one in the source tree).
"""

import importlib.util
import logging
import os
from pathlib import Path

import pytest

SHARED_DATA_ENV = 'MP_SLAM_SHARED_DATA'


def _find_repo_root() -> Path:
    """Directory holding this package's package.xml, searched upward from here.

    Falls back to the parent of test/ if no package.xml is found.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / 'package.xml').is_file() and (candidate / 'setup.py').is_file():
            return candidate
    return here.parent


REPO_ROOT = _find_repo_root()


def _shared_data_dir() -> Path:
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / 'shared' / 'data').resolve()


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """Root of the mp_slam_ros source tree (where package.xml lives)."""
    return REPO_ROOT


@pytest.fixture(scope='session')
def shared_data() -> Path:
    """Path of the shared benchmark data (``../shared/data`` beside the repo).

    ``MP_SLAM_SHARED_DATA`` overrides the location.  Tests using this fixture
    are skipped (with the reason printed) if the directory does not exist.
    """
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(
            f'shared benchmark data not found at {path}; set {SHARED_DATA_ENV}'
        )
    return path


def _have_rclpy() -> bool:
    try:
        return importlib.util.find_spec('rclpy') is not None
    except (ImportError, ValueError):
        return False


def pytest_configure(config):
    config.addinivalue_line(
        'markers',
        'ros: test needs a ROS 2 environment (rclpy); skipped when rclpy is not importable',
    )


def pytest_collection_modifyitems(config, items):
    if _have_rclpy():
        return
    skip_ros = pytest.mark.skip(reason='needs ROS 2 (rclpy not importable)')
    for item in items:
        if item.get_closest_marker('ros') is not None:
            item.add_marker(skip_ros)


@pytest.fixture(autouse=True)
def _package_loggers_propagate():
    """Keep the package's log records reaching pytest's caplog in a sourced ROS 2.

    launch_testing's pytest plugin imports ``launch``, whose logger class turns ``propagate`` off
    for every logger created afterwards (``launch.logging.LaunchLogger``), ours included.
    """
    logging.getLogger('mp_slam_ros')  # the package logger itself, which caplog.at_level(logger=...) uses
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (name == 'mp_slam_ros' or name.startswith('mp_slam_ros.')):
            logger.propagate = True
    yield
