"""Makes the repository importable as `ansible_collections.beamops.cluster` for the tests.

The repository root is the collection root; Ansible (and the modules' own imports) expect it under
`<path>/ansible_collections/beamops/cluster`. We build that path once, as a symlink, in a folder of the
test session and put it first on sys.path and in ANSIBLE_COLLECTIONS_PATH for child processes.
"""
import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS_DIR)

from collection_path import DEFAULT_ROOT, link_collection  # noqa: E402

COLLECTIONS_ROOT = link_collection(os.environ.get("BEAMOPS_TEST_COLLECTIONS", DEFAULT_ROOT))


if COLLECTIONS_ROOT not in sys.path:
    sys.path.insert(0, COLLECTIONS_ROOT)
os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS_ROOT
os.environ.setdefault("ANSIBLE_NOCOLOR", "1")


@pytest.fixture(scope="session")
def collections_root():
    """Folder that holds ansible_collections/beamops/cluster (a link to this repository)."""
    return COLLECTIONS_ROOT
