"""ROS-free checks of the package metadata: package.xml, setup.py, setup.cfg.

setup.py is evaluated with ``setuptools.setup`` replaced by a recorder, so
nothing is built or installed and nothing heavy is imported.
"""

import configparser
import os
import re
import runpy
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = 'mp_slam_ros'

ROS_EXEC_DEPENDS = {
    'rclpy', 'std_msgs', 'geometry_msgs', 'nav_msgs', 'sensor_msgs', 'std_srvs',
    'diagnostic_msgs', 'tf2_ros', 'sensor_msgs_py', 'message_filters',
}
PY_EXEC_DEPENDS = {
    'python3-numpy', 'python3-scipy', 'python3-numba', 'python3-yaml',
    'python3-opencv', 'python3-matplotlib',
}
TEST_DEPENDS = {'python3-pytest', 'launch_testing_ros', 'ros2launch'}
INSTALL_REQUIRES = {'numpy', 'scipy', 'numba', 'PyYAML', 'matplotlib', 'tqdm'}


def run_setup_py(setup_py: Path) -> dict:
    """Evaluate a setup.py and return the keyword arguments given to setup()."""
    calls = []
    with mock.patch('setuptools.setup', side_effect=lambda **kw: calls.append(kw)):
        runpy.run_path(str(setup_py), run_name='__main__')
    assert len(calls) == 1, f'{setup_py} called setup() {len(calls)} times'
    return calls[0]


def installed_files(setup_kwargs: dict) -> dict:
    """Map source path (relative, posix) -> install directory, from data_files."""
    out = {}
    for dest, files in setup_kwargs.get('data_files', []):
        for f in files:
            assert not os.path.isabs(f), f'data_files entry must be relative: {f}'
            out[Path(f).as_posix()] = Path(dest).as_posix()
    return out


def files_under(root: Path, subdir: str):
    """Real files under root/subdir (recursive), ignoring dotfiles and caches."""
    base = root / subdir
    if not base.is_dir():
        return []
    found = []
    for p in sorted(base.rglob('*')):
        rel = p.relative_to(root)
        if not p.is_file():
            continue
        if any(part.startswith('.') or part == '__pycache__' for part in rel.parts):
            continue
        found.append(rel.as_posix())
    return found


@pytest.fixture(scope='module')
def package_xml():
    return ET.parse(ROOT / 'package.xml').getroot()


@pytest.fixture(scope='module')
def setup_kwargs():
    return run_setup_py(ROOT / 'setup.py')


# ---------------------------------------------------------------- package.xml

def test_package_xml_identity(package_xml):
    assert package_xml.tag == 'package'
    assert package_xml.get('format') == '3'
    assert package_xml.findtext('name') == PKG
    assert package_xml.findtext('version') == '0.1.0'
    assert (package_xml.findtext('description') or '').strip()
    assert [e.text for e in package_xml.findall('license')] == ['Apache-2.0']
    maint = package_xml.findall('maintainer')
    assert maint, 'no <maintainer>'
    assert all(m.get('email', '').endswith('@example.org') for m in maint)
    assert package_xml.findtext('export/build_type') == 'ament_python'


def test_package_xml_exec_depends(package_xml):
    declared = {e.text.strip() for e in package_xml.findall('exec_depend')}
    missing = (ROS_EXEC_DEPENDS | PY_EXEC_DEPENDS) - declared
    assert not missing, f'package.xml lacks exec_depend: {sorted(missing)}'


def test_package_xml_test_depends(package_xml):
    declared = {e.text.strip() for e in package_xml.findall('test_depend')}
    missing = TEST_DEPENDS - declared
    assert not missing, f'package.xml lacks test_depend: {sorted(missing)}'


def test_package_xml_no_duplicate_depends(package_xml):
    tags = ('depend', 'build_depend', 'exec_depend', 'test_depend', 'buildtool_depend')
    seen = [(e.tag, e.text.strip()) for t in tags for e in package_xml.findall(t)]
    dups = sorted({x for x in seen if seen.count(x) > 1})
    assert not dups, f'duplicate dependency entries: {dups}'


def test_versions_agree(package_xml, setup_kwargs):
    assert setup_kwargs['version'] == package_xml.findtext('version')
    assert setup_kwargs['name'] == package_xml.findtext('name')


# ---------------------------------------------------------------- setup.py

def test_resource_marker_exists():
    marker = ROOT / 'resource' / PKG
    assert marker.is_file(), f'missing ament resource marker {marker}'


def test_license_file_is_apache2():
    text = (ROOT / 'LICENSE').read_text(encoding='utf-8')
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text


def test_ament_index_and_manifest_installed(setup_kwargs):
    files = installed_files(setup_kwargs)
    assert files.get(f'resource/{PKG}') == 'share/ament_index/resource_index/packages'
    assert files.get('package.xml') == f'share/{PKG}'
    for src in files:
        assert (ROOT / src).is_file(), f'data_files lists a missing file: {src}'


@pytest.mark.parametrize('subdir', ['config', 'launch'])
def test_every_share_file_is_installed(setup_kwargs, subdir):
    files = installed_files(setup_kwargs)
    on_disk = files_under(ROOT, subdir)
    not_installed = [f for f in on_disk if f not in files]
    assert not not_installed, (
        f'files under {subdir}/ that setup.py would not install '
        f'(config needs *.yaml, launch needs *.launch.py): {not_installed}')
    for f in on_disk:
        assert files[f] == f'share/{PKG}/{subdir}', f'{f} -> {files[f]}'


def test_share_globs_pick_up_new_files_and_tolerate_missing_dirs(tmp_path):
    """setup.py globs config/ and launch/: new files appear, a missing dir is fine."""
    shutil.copy(ROOT / 'setup.py', tmp_path / 'setup.py')
    (tmp_path / 'config').mkdir()
    (tmp_path / 'config' / 'precision_new.yaml').write_text('a: 1\n')
    # No launch/ directory at all.
    kwargs = run_setup_py(tmp_path / 'setup.py')
    files = installed_files(kwargs)
    assert files.get('config/precision_new.yaml') == f'share/{PKG}/config'
    assert not any(dest.endswith('/launch') for dest in files.values())

    # An empty launch/ must be fine too, and a launch file must be picked up.
    (tmp_path / 'launch').mkdir()
    run_setup_py(tmp_path / 'setup.py')
    (tmp_path / 'launch' / 'slam.launch.py').write_text('')
    files = installed_files(run_setup_py(tmp_path / 'setup.py'))
    assert files.get('launch/slam.launch.py') == f'share/{PKG}/launch'


def test_packages_and_requirements(setup_kwargs):
    packages = setup_kwargs['packages']
    assert PKG in packages
    assert not any(p == 'test' or p.startswith('test.') for p in packages)
    reqs = {_name(r) for r in setup_kwargs['install_requires']}
    assert reqs >= INSTALL_REQUIRES, f'missing: {sorted(INSTALL_REQUIRES - reqs)}'
    assert 'rclpy' not in reqs, 'rclpy is not on PyPI; it must not be in install_requires'
    extras = setup_kwargs['extras_require']
    assert 'pytest' in {_name(r) for r in extras['test']}
    assert 'gtsam' in extras['bench']


def _name(requirement: str) -> str:
    return re.split(r'[<>=!~;\[ ]', requirement, maxsplit=1)[0].strip()


def _floors(requirements) -> dict[str, str]:
    out = {}
    for r in requirements:
        m = re.search(r'>=\s*([0-9][^,; ]*)', r)
        if m:
            out[_name(r).lower()] = m.group(1)
    return out


def test_oldest_lock_pins_exactly_the_setup_floors(setup_kwargs):
    """`make test-oldest` tests what setup.py promises: every floor is pinned in oldest.in, and no more."""
    floors = _floors(setup_kwargs['install_requires'] + setup_kwargs['extras_require']['test'])
    pins = {}
    for line in (ROOT / 'requirements' / 'oldest.in').read_text().splitlines():
        line = line.split('#')[0].strip()
        if line:
            name, _, version = line.partition('==')
            pins[name.strip().lower()] = version.strip()
    assert pins == floors
    compiled = (ROOT / 'requirements' / 'oldest.txt').read_text().lower()
    for name, version in pins.items():
        assert f'\n{name}=={version}\n' in compiled, f'{name}=={version} not in requirements/oldest.txt: run make lock'


def test_lock_files_are_made_from_the_current_inputs():
    """Both locks hold every package setup.py and tools.in ask for (regenerate with `make lock`)."""
    tools = [_name(line).lower() for line in (ROOT / 'requirements' / 'tools.in').read_text().splitlines()
             if line.strip() and not line.startswith('#')]
    for lock in ('lock.txt', 'oldest.txt'):
        text = (ROOT / 'requirements' / lock).read_text().lower().replace('_', '-')
        for name in [*INSTALL_REQUIRES, 'opencv-python-headless', 'rosbags', 'pytest', *tools]:
            assert f'\n{name.lower().replace("_", "-")}==' in text, f'{name} missing from requirements/{lock}'


def test_package_xml_declares_the_oldest_supported_versions(setup_kwargs, package_xml):
    """rosdep users get the distribution's packages: package.xml names the same floors as setup.py."""
    floors = _floors(setup_kwargs['install_requires'])
    keys = {'numpy': 'python3-numpy', 'scipy': 'python3-scipy', 'numba': 'python3-numba',
            'pyyaml': 'python3-yaml', 'matplotlib': 'python3-matplotlib', 'opencv-python-headless': 'python3-opencv'}
    declared = {e.text: e.get('version_gte') for e in package_xml.findall('exec_depend')}
    for name, key in keys.items():
        # Distributions version OpenCV without the wheel's build number (4.6.0.66 -> 4.6.0).
        assert declared.get(key) == '.'.join(floors[name].split('.')[:3]), (key, declared.get(key), floors[name])


def test_console_script(setup_kwargs):
    scripts = setup_kwargs['entry_points']['console_scripts']
    assert 'mp-slam = mp_slam_ros.cli:main' in [s.replace(' ', '').replace('=', ' = ')
                                               for s in scripts]


# ---------------------------------------------------------------- setup.cfg

def test_setup_cfg_ros_script_dir():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / 'setup.cfg', encoding='utf-8')
    assert cfg.get('develop', 'script_dir') == f'$base/lib/{PKG}'
    assert cfg.get('install', 'install_scripts') == f'$base/lib/{PKG}'
    assert cfg.get('tool:pytest', 'testpaths').split() == ['test']
