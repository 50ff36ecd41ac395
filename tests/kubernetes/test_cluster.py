"""The kubernetes role on a real cluster: deploy the test release per strategy with beamops.cluster.deploy_k8s (apply,
rollout wait, full-mesh gate through port-forwards), verify with beamops.cluster.verify, delete a pod and wait until
the mesh is whole again, check the cluster domain the pods really have, and remove everything.

Runs only when K8S_AUTH_KUBECONFIG (a kubeconfig) and BEAMOPS_K8S_IMAGE (the meshprobe image, built with
docs/examples/Dockerfile.mix and loaded into the cluster) are set; skips with that reason otherwise. On a laptop:
see "The real-cluster suite on kind" in docs/kubernetes.md. BEAMOPS_K8S_CLUSTER_DOMAIN if the cluster's domain is not
cluster.local. Each strategy gets a namespace of its own (beamops-k8s-<n>), created and deleted by the test.
"""
import os
import subprocess
import sys
import time

import pytest
import yaml

KUBECONFIG = os.environ.get("K8S_AUTH_KUBECONFIG", "")
IMAGE = os.environ.get("BEAMOPS_K8S_IMAGE", "")
DOMAIN = os.environ.get("BEAMOPS_K8S_CLUSTER_DOMAIN", "cluster.local")

pytestmark = pytest.mark.skipif(not (KUBECONFIG and IMAGE), reason="set K8S_AUTH_KUBECONFIG and BEAMOPS_K8S_IMAGE to run on a real cluster")

STRATEGIES = [
    ("dnssrv-sts", {"kubernetes_strategy": "kubernetes_dnssrv", "kubernetes_workload": "statefulset"}),
    ("dns-deploy", {"kubernetes_strategy": "kubernetes_dns", "kubernetes_workload": "deployment"}),
    ("api-pods-ip-sts", {"kubernetes_strategy": "kubernetes_api", "kubernetes_workload": "statefulset",
                         "kubernetes_discovery": {"mode": "ip", "kubernetes_ip_lookup_mode": "pods"}}),
    ("api-endpoints-hostname-sts", {"kubernetes_strategy": "kubernetes_api", "kubernetes_workload": "statefulset",
                                    "kubernetes_discovery": {"mode": "hostname", "kubernetes_ip_lookup_mode": "endpoints"}}),
    ("api-pods-dns-deploy", {"kubernetes_strategy": "kubernetes_api", "kubernetes_workload": "deployment",
                             "kubernetes_discovery": {"mode": "dns", "kubernetes_ip_lookup_mode": "pods"}}),
]


def playbook(name, variables, folder):
    path = folder / "vars.yml"
    path.write_text(yaml.safe_dump(variables))
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "beamops.cluster." + name, "-e", "@%s" % path],
                          capture_output=True, text=True, timeout=1800, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    proc.out = proc.stdout + proc.stderr
    return proc


def core_api():
    from kubernetes import client, config
    config.load_kube_config(config_file=KUBECONFIG)
    return client.CoreV1Api()


def pod_output(api, namespace, pod, command):
    from kubernetes.stream import stream
    return stream(api.connect_get_namespaced_pod_exec, pod, namespace, command=command, stderr=True, stdin=False, stdout=True, tty=False)


@pytest.mark.parametrize("name,extra", STRATEGIES, ids=[s[0] for s in STRATEGIES])
def test_deploy_verify_heal_and_remove(tmp_path, name, extra):
    namespace = "beamops-k8s-%d" % [s[0] for s in STRATEGIES].index(name)
    variables = dict({"kubernetes_release_name": "meshprobe", "kubernetes_image": IMAGE, "kubernetes_kubeconfig": KUBECONFIG,
                      "kubernetes_namespace": namespace, "kubernetes_create_namespace": True, "kubernetes_replicas": 3,
                      "kubernetes_cluster_domain": DOMAIN, "kubernetes_mesh_timeout": 180}, **extra)
    try:
        started = time.monotonic()
        deploy = playbook("deploy_k8s", variables, tmp_path)
        took = time.monotonic() - started
        assert deploy.returncode == 0, deploy.out[-6000:]
        print("\n%s: deploy_k8s (apply, rollout, full-mesh gate through port-forwards) %.1f s" % (name, took))

        api = core_api()
        pods = api.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/instance=meshprobe").items
        assert len(pods) == 3
        # The cluster domain the pods really have (pitfall 6): the last search domain of a ClusterFirst pod.
        resolv = pod_output(api, namespace, pods[0].metadata.name, ["cat", "/etc/resolv.conf"])
        search = [line.split()[1:] for line in resolv.splitlines() if line.startswith("search")][0]
        assert search[-1] == DOMAIN, "the cluster's domain is %s: set BEAMOPS_K8S_CLUSTER_DOMAIN" % search[-1]

        verify = playbook("verify", variables, tmp_path)
        assert verify.returncode == 0 and "full mesh: True; 3 of 3 nodes answered" in verify.out, verify.out[-6000:]

        victim = pods[1].metadata.name
        api.delete_namespaced_pod(victim, namespace)
        deleted = time.monotonic()
        healed = None
        while time.monotonic() - deleted < 300:
            check = playbook("verify", variables, tmp_path)
            if check.returncode == 0:
                healed = time.monotonic() - deleted
                break
            time.sleep(5)
        print("%s: pod %s deleted, full mesh of 3 again after %s s" % (name, victim, "%.1f" % healed if healed else "(never)"))
        assert healed is not None
    finally:
        remove = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-e", "@%s" % (tmp_path / "vars.yml"),
                                 os.path.join(os.path.dirname(__file__), "remove.yml")], capture_output=True, text=True, timeout=900,
                                check=False)
        assert remove.returncode == 0, (remove.stdout + remove.stderr)[-3000:]
