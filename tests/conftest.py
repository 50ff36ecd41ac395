"""Makes the repository importable as `ansible_collections.beamops.cluster` for the tests.

The repository root is the collection root; Ansible (and the modules' own imports) expect it under
`<path>/ansible_collections/beamops/cluster`. We build that path once, as a symlink, in a folder of the
test session and put it first on sys.path and in ANSIBLE_COLLECTIONS_PATH for child processes.
"""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(REPO_ROOT, "tests")
COLLECTIONS_ROOT = os.environ.get("BEAMOPS_TEST_COLLECTIONS", os.path.join(REPO_ROOT, "tests", "output", "collections"))


def _link_collection():
    namespace_dir = os.path.join(COLLECTIONS_ROOT, "ansible_collections", "beamops")
    link = os.path.join(namespace_dir, "cluster")
    os.makedirs(namespace_dir, exist_ok=True)
    if os.path.islink(link) and os.readlink(link) == REPO_ROOT:
        return
    tmp = link + ".%d" % os.getpid()
    os.symlink(REPO_ROOT, tmp)
    os.replace(tmp, link)


_link_collection()
for path in (COLLECTIONS_ROOT, TESTS_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS_ROOT
os.environ.setdefault("ANSIBLE_NOCOLOR", "1")


@pytest.fixture(scope="session")
def collections_root():
    """Folder that holds ansible_collections/beamops/cluster (a link to this repository)."""
    return COLLECTIONS_ROOT
