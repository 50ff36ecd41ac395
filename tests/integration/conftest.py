"""Fixtures shared by the integration tests: one VM lab per test session (see vmlab.py), with meshprobe 0.1.0
deployed to its first 3 hosts, kept up across modules and removed at the end."""
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vmlab  # noqa: E402


def pytest_collection_modifyitems(items):
    # Needs root, systemd-nspawn and the lab role.
    skip = None
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="the lab needs root")
    elif shutil.which("systemd-nspawn") is None:
        skip = pytest.mark.skip(reason="the lab needs systemd-nspawn")
    if skip:
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def builds():
    """The test releases, built (offline, cached by a hash of their sources) into build/testapps."""
    subprocess.run([os.path.join(vmlab.REPO, "scripts", "build-testapps.sh")], check=True, capture_output=True, timeout=1800)
    return vmlab.BUILDS


@pytest.fixture(scope="session")
def vm_lab(builds):
    """The shared lab with meshprobe 0.1.0 on its 3 members (release_net_ticktime 10, so tick-path faults are short)."""
    vmlab.playbook("lab_down", "lab_name=" + vmlab.LAB, check=False)
    vmlab.playbook("lab_up", "lab_name=" + vmlab.LAB, "lab_network=" + vmlab.NETWORK, "lab_hosts=4")
    try:
        vmlab.playbook("deploy_vms", *vmlab.base_vars())
        yield vmlab
    finally:
        vmlab.playbook("lab_down", "lab_name=" + vmlab.LAB, check=False)
