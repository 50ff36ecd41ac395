"""The kubernetes role through real ansible-playbook runs of beamops.cluster.deploy_k8s in render-only mode (no cluster
is touched, none exists here): the files, their modes, a second run that changes nothing and keeps the cookie, stale
files removed when the configuration changes, and refusals that name the variable before anything is written."""
import base64
import os
import re
import stat
import subprocess
import sys

import pytest
import yaml

BASE = ["-e", "kubernetes_release_name=meshprobe", "-e", "kubernetes_image=registry.example.com/meshprobe:0.1.0",
        "-e", "kubernetes_namespace=shop", "-e", "kubernetes_render_only=true"]


def deploy(folder, *extra):
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "beamops.cluster.deploy_k8s",
           "-e", "kubernetes_render_dir=%s" % folder] + BASE + list(extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    proc.out = proc.stdout + proc.stderr
    return proc


def files(folder):
    return dict((name, (folder / name).read_bytes()) for name in sorted(os.listdir(folder)))


def cookie_of(folder):
    secret = [name for name in os.listdir(folder) if "-secret-" in name][0]
    return base64.b64decode(yaml.safe_load((folder / secret).read_text())["data"]["cookie"]).decode()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("manifests")
    first = deploy(folder)
    assert first.returncode == 0, first.out[-4000:]
    return folder, first


def test_render_only_writes_one_file_per_object_the_secret_for_its_owner_only(rendered):
    folder, first = rendered
    names = sorted(os.listdir(folder))
    assert names == ["01-secret-meshprobe-cookie.yaml", "02-configmap-meshprobe-config.yaml", "03-service-meshprobe-headless.yaml",
                     "04-networkpolicy-meshprobe.yaml", "05-poddisruptionbudget-meshprobe.yaml", "06-statefulset-meshprobe.yaml"]
    for name in names:
        mode = stat.S_IMODE(os.stat(folder / name).st_mode)
        assert mode == (0o600 if "-secret-" in name else 0o644), (name, oct(mode))
    cookie = cookie_of(folder)
    assert re.match(r"^[A-Za-z0-9]{48}$", cookie)
    assert cookie not in first.out
    assert "Apply the workload and wait until its rollout is complete" not in first.out  # no cluster task ran


def test_rendering_again_changes_nothing_and_keeps_the_cookie(rendered):
    folder, _first = rendered
    before = files(folder)
    again = deploy(folder)
    assert again.returncode == 0, again.out[-4000:]
    assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0\s", again.out), again.out[-2000:]
    assert files(folder) == before


def test_a_strategy_switch_adds_and_later_removes_the_rbac_files_with_the_same_cookie(tmp_path):
    assert deploy(tmp_path).returncode == 0
    cookie = cookie_of(tmp_path)
    api = deploy(tmp_path, "-e", "kubernetes_strategy=kubernetes_api")
    assert api.returncode == 0, api.out[-4000:]
    assert [n for n in os.listdir(tmp_path) if "-role" in n or "-serviceaccount-" in n]
    assert cookie_of(tmp_path) == cookie
    back = deploy(tmp_path)
    assert back.returncode == 0, back.out[-4000:]
    assert not [n for n in os.listdir(tmp_path) if "-role" in n or "-serviceaccount-" in n]
    assert cookie_of(tmp_path) == cookie and len(os.listdir(tmp_path)) == 6


def test_a_cookie_that_differs_from_the_rendered_one_is_refused(rendered, tmp_path):
    folder, _first = rendered
    before = files(folder)
    proc = deploy(folder, "-e", "kubernetes_cookie=anotherCookie123")
    assert proc.returncode != 0 and "kubernetes_cookie differs from the cookie in the existing Secret" in proc.out
    assert "anotherCookie123" not in proc.out.replace("kubernetes_cookie=anotherCookie123", "")
    assert files(folder) == before


@pytest.mark.parametrize("extra,message", [
    (["-e", "kubernetes_workload=deployment"], "kubernetes_workload is deployment, but kubernetes_dnssrv dials the SRV targets"),
    (["-e", "kubernetes_strategy=gossip"], "kubernetes_strategy"),
    (["-e", "kubernetes_replicas=0"], "kubernetes_replicas must be a whole number of at least 1"),
    (["-e", "kubernetes_dist_port=4369"], "kubernetes_dist_port is 4369, the same as epmd_port"),
    (["-e", '{"kubernetes_cookie": "has space"}'], "kubernetes_cookie has whitespace"),
    (["-e", '{"kubernetes_discovery": {"mode": "dns"}}', "-e", "kubernetes_strategy=kubernetes_api", "-e",
      "kubernetes_cluster_domain=k8s.example.com"], "kubernetes_cluster_domain is 'k8s.example.com', but libcluster 3.5.0 builds mode dns"),
])
def test_the_preflight_refuses_naming_the_variable_and_writes_nothing(tmp_path, extra, message):
    proc = deploy(tmp_path / "out", *extra)
    assert proc.returncode != 0 and message in proc.out, proc.out[-3000:]
    assert not (tmp_path / "out").exists()
