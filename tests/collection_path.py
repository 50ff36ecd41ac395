"""The folder in which `ansible_collections/beamops/cluster` links to this repository.

The repository root is the collection root, but imports and Ansible need it under
`<folder>/ansible_collections/beamops/cluster`. The tests (conftest.py), the benchmark and the fuzz
scripts all make that link with `link_collection()`.
"""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ROOT = os.path.join(REPO_ROOT, "tests", "output", "collections")


def link_collection(root=DEFAULT_ROOT):
    """Make `root/ansible_collections/beamops/cluster` a link to the repository; return `root`."""
    namespace_dir = os.path.join(root, "ansible_collections", "beamops")
    link = os.path.join(namespace_dir, "cluster")
    os.makedirs(namespace_dir, exist_ok=True)
    if not (os.path.islink(link) and os.readlink(link) == REPO_ROOT):
        tmp = "%s.%d" % (link, os.getpid())
        os.symlink(REPO_ROOT, tmp)
        os.replace(tmp, link)
    return root
