"""checkov (--skip-download, offline) on the rendered YAML of every combination the preflight allows.

checkov runs from its own virtualenv (made by scripts/bootstrap.sh, BEAMOPS_CHECKOV_VENV or
/var/cache/beamops/venv-checkov), so its many dependencies cannot break Ansible's. The checks that fail by design
are listed with their reasons in docs/examples/checkov-skips.yml; this test checks that exactly those fail, that each
of them still fails somewhere (no skip is kept without need), and that API-only skips fail only for kubernetes_api.
"""
import collections
import json
import os
import subprocess

import pytest
import yaml

from ansible_collections.beamops.cluster.plugins.filter.k8s_manifests import k8s_manifest_files

from test_k8s_manifests import COMBOS, build, combo_id

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.environ.get("BEAMOPS_CHECKOV_VENV", "/var/cache/beamops/venv-checkov")
CHECKOV = os.path.join(VENV, "bin", "checkov")
SKIPS = os.path.join(REPO, "docs", "examples", "checkov-skips.yml")

pytestmark = pytest.mark.skipif(not os.access(CHECKOV, os.X_OK), reason="checkov is not installed in %s (scripts/bootstrap.sh makes it)" % VENV)


def load_skips():
    with open(SKIPS) as handle:
        return yaml.safe_load(handle)


def test_checkov_fails_only_the_documented_checks(tmp_path):
    folders = {}
    for index, inputs in enumerate(COMBOS):
        folder = tmp_path / ("%02d" % index)
        folder.mkdir()
        folders[folder.name] = inputs
        for item in k8s_manifest_files(build(inputs)):
            (folder / item["name"]).write_text(item["content"])
    proc = subprocess.run([CHECKOV, "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download", "--quiet", "-o", "json"],
                          capture_output=True, text=True, timeout=900, check=False)
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["parsing_errors"] == 0 and report["summary"]["resource_count"] >= 6 * len(COMBOS)
    failed = collections.defaultdict(set)
    for check in report["results"]["failed_checks"]:
        failed[check["check_id"]].add(check["file_path"].strip("/").split("/")[0])
    skips = dict((s["id"], s) for s in load_skips())
    assert sorted(set(failed) - set(skips)) == [], "undocumented failures: %s" % dict((k, sorted(v)) for k, v in failed.items() if k not in skips)
    assert sorted(set(skips) - set(failed)) == [], "skips that no longer fail: remove them from docs/examples/checkov-skips.yml"
    for check_id, skip in skips.items():
        assert skip["reason"].strip() and skip["title"].strip()
        if skip["only"]:
            strategies = set(folders[f]["strategy"] for f in failed[check_id])
            assert strategies <= set(skip["only"]), (check_id, sorted(combo_id(folders[f]) for f in failed[check_id]))
    print("\ncheckov %s on %d combinations: %d passed, %d failed (all documented: %s)"
          % (report["summary"]["checkov_version"], len(COMBOS), report["summary"]["passed"], report["summary"]["failed"], ", ".join(sorted(skips))))


def test_the_guide_shows_every_skip():
    with open(os.path.join(REPO, "docs", "kubernetes.md")) as handle:
        guide = handle.read()
    for skip in load_skips():
        assert "`%s`" % skip["id"] in guide, "docs/kubernetes.md does not show %s" % skip["id"]
