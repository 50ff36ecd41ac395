"""The pods' contract of the Kubernetes manifests, run for real on the lab. This is a contract test of the manifests,
not Kubernetes: there is no API server, kubelet, container runtime or CoreDNS here.

What plays what:

- each lab host (systemd-nspawn, its own address) plays one pod: it gets the pod's hostname, the /etc/hosts and
  /etc/resolv.conf the kubelet writes, the release tarball unpacked at /app (where docs/examples/Dockerfile.mix puts
  it), the ConfigMap's (and any Secret's) files at their rendered mount paths with their modes, and it runs the rendered
  container's command and args with the env resolved as the kubelet resolves it (fieldRef from the pod, secretKeyRef
  from the rendered Secret, $(VAR) expansion in declaration order), as uid/gid 10001 with no new privileges, with the
  root filesystem read-only and a fresh tmpfs at the emptyDir's mount path (RELEASE_TMP);
- the lab's dnsmasq (role input lab_dns_records) serves what CoreDNS would serve for the headless Service: A records,
  per-pod names <pod>.<svc>.<ns>.svc.<domain> (dashed IPs for a Deployment's pods) and SRV records for its named ports,
  computed by k8s_manifests.coredns_records from the rendered objects;
- libcluster's Kubernetes.DNS and Kubernetes.DNSSRV are meshprobe's stand-ins (testapps/README.md).

Then our own client (the mesh_info module, dialling each node's pinned distribution port) checks that the nodes form
a full mesh under exactly the names the builder says they run as. The time from starting the pods to a full mesh is
printed per strategy. Needs root and the lab; lab k8sct on 198.18.40.0/24, removed at the end.
"""
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
import yaml

from ansible_collections.beamops.cluster.plugins.module_utils import k8s_manifests as m
from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import wait_for_mesh

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = "k8sct"
NETWORK = "198.18.40.0/24"
BRIDGE = "198.18.40.1"
ADDRESSES = ["198.18.40.11", "198.18.40.12", "198.18.40.13"]
HOSTS = ["%s-%d" % (LAB, i) for i in (1, 2, 3)]
STATE = "/var/lib/beamops/lab/%s" % LAB
INVENTORY = "%s/inventory.yml" % STATE
ZONE = "cluster.local"
COOKIE = "k8sContractCookie7a1f"
BASE = {"release_name": "meshprobe", "image": "meshprobe:contract", "namespace": "k8sct", "cookie": COOKIE, "replicas": 3,
        "release_root": "/app"}
SCENARIOS = [
    ("statefulset-kubernetes_dnssrv", dict(BASE, workload="statefulset", strategy="kubernetes_dnssrv")),
    ("deployment-kubernetes_dns", dict(BASE, workload="deployment", strategy="kubernetes_dns")),
    ("statefulset-kubernetes_dns", dict(BASE, workload="statefulset", strategy="kubernetes_dns")),
]
# The "container": mount namespace with a read-only root and tmpfs emptyDirs, then uid/gid and no_new_privs, then exec.
POD_RUNNER = r'''
import ctypes, json, os, shutil, subprocess, sys
spec = json.load(open(sys.argv[1]))
if sys.argv[2] == "setup":
    os.umask(0o022)  # the spec file is private, the release and ConfigMap files are not
    subprocess.run(["hostname", spec["hostname"]], check=True)
    for path, text in (("/etc/hosts", spec["hosts"]), ("/etc/resolv.conf", spec["resolv"])):
        with open(path, "w") as handle:
            handle.write(text)
    shutil.rmtree(spec["root"], ignore_errors=True)
    os.makedirs(spec["root"])
    subprocess.run(["tar", "-xzf", spec["tarball"], "-C", spec["root"]], check=True)
    for folder in set(os.path.dirname(path) for path in spec["files"]):
        shutil.rmtree(folder, ignore_errors=True)  # a volume is made anew for each pod
        os.makedirs(folder, 0o755)
    for path, (text, mode) in spec["files"].items():
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)
    sys.exit(0)
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", "/"], check=True)
for path in spec["empty_dirs"]:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777,size=256m", "tmpfs", path], check=True)
os.chdir(spec["workdir"])
os.setgroups([])
os.setgid(spec["gid"])
os.setuid(spec["uid"])
ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
os.execve(spec["argv"][0], spec["argv"], spec["env"])
'''

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="the lab needs systemd-nspawn"),
]


def playbook(name, *extra, check=True):
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "beamops.cluster." + name] + list(extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
    proc.out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, proc.out[-6000:]
    return proc


def ssh(address, command, data=None, check=True):
    return subprocess.run(
        ["ssh", "-i", "%s/ssh/id_ed25519" % STATE, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "root@" + address, command],
        input=data, capture_output=True, timeout=120, check=check)


def lab_records(records):
    """k8s_manifests.coredns_records in the lab role's lab_dns_records shape."""
    out = [{"name": name, "type": "AAAA" if ":" in ip else "A", "address": ip} for name, ips in sorted(records["A"].items()) for ip in ips]
    out += [{"name": name, "type": "SRV", "target": target, "port": port, "priority": prio, "weight": weight}
            for name, answers in sorted(records["SRV"].items()) for prio, weight, port, target in answers]
    return out


def dns_query(name, qtype):
    """Answers from the lab's DNS: A -> [ip], SRV -> [(priority, weight, port, target)]."""
    codes = {"A": 1, "SRV": 33}
    query_id = random.randint(0, 0xFFFF)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", codes[qtype], 1), (BRIDGE, 53))
        reply = sock.recv(4096)
    count = struct.unpack(">H", reply[6:8])[0]
    offset = 12 + len(qname) + 4

    def read_name(at):
        labels = []
        while True:
            length = reply[at]
            if length & 0xC0 == 0xC0:
                return ".".join(labels + [read_name(struct.unpack(">H", reply[at:at + 2])[0] & 0x3FFF)[0]]).strip("."), at + 2
            if length == 0:
                return ".".join(labels), at + 1
            labels.append(reply[at + 1:at + 1 + length].decode())
            at += 1 + length

    answers = []
    for _answer in range(count):
        _name, offset = read_name(offset)
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", reply[offset:offset + 10])
        data = offset + 10
        if rtype == 1:
            answers.append(socket.inet_ntoa(reply[data:data + 4]))
        elif rtype == 33:
            prio, weight, port = struct.unpack(">HHH", reply[data:data + 6])
            answers.append((prio, weight, port, read_name(data + 6)[0]))
        offset = data + length
    return sorted(answers)


@pytest.fixture(scope="module")
def tarball():
    subprocess.run(["bash", os.path.join(REPO, "scripts", "build-testapps.sh")], check=True, capture_output=True, timeout=1800)
    out = os.environ.get("BEAMOPS_TESTAPPS_DIR", os.path.join(REPO, "build", "testapps"))
    return os.path.join(out, "meshprobe-0.1.0.tar.gz")


@pytest.fixture(scope="module")
def lab(tarball, tmp_path_factory):
    playbook("lab_down", "-e", "lab_name=" + LAB, check=False)
    playbook("lab_up", "-e", "lab_name=" + LAB, "-e", "lab_network=" + NETWORK, "-e", "lab_hosts=3")
    try:
        for address in ADDRESSES:
            ssh(address, "mkdir -p /root/k8sct && cat > /root/k8sct/release.tar.gz", data=open(tarball, "rb").read())
            ssh(address, "cat > /root/k8sct/pod.py", data=POD_RUNNER.encode())
        yield tmp_path_factory.mktemp("k8sct")
    finally:
        playbook("lab_down", "-e", "lab_name=" + LAB, check=False)


def serve_dns(objects, pods, folder):
    """lab_up again with the records CoreDNS would serve for these objects and pods (the hosts stay up)."""
    records = m.coredns_records(objects, pods, ZONE)
    extra = folder / "records.json"
    extra.write_text(json.dumps({"lab_dns_records": lab_records(records)}))
    playbook("lab_up", "-e", "lab_name=" + LAB, "-e", "lab_network=" + NETWORK, "-e", "lab_hosts=3", "-e", "@%s" % extra)
    return records


def pod_spec(objects, pod, tarball_path="/root/k8sct/release.tar.gz"):
    """Everything a lab host needs to play the pod (the env holds the cookie: the spec file is written 0600)."""
    container = pod["spec"]["containers"][0]
    files = m.mounted_files(objects, pod)
    security = container["securityContext"]
    return {
        "hostname": pod["hostname"] or pod["name"],
        "hosts": m.kubelet_hosts_file(pod, ZONE),
        "resolv": m.kubelet_resolv_conf(pod, BRIDGE, ZONE),
        "root": "/app", "tarball": tarball_path, "workdir": "/app",
        "files": dict((path, entry) for path, entry in files.items() if entry[0] is not None),
        "empty_dirs": sorted(path for path, entry in files.items() if entry[0] is None),
        "uid": security["runAsUser"], "gid": security["runAsGroup"],
        "argv": m.container_argv(objects, pod),
        # The image's variables (docs/examples/Dockerfile.mix: PATH, HOME=/tmp, LANG), the runtime's HOSTNAME, then the container's.
        "env": dict({"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
                     "HOSTNAME": pod["hostname"] or pod["name"]}, **m.kubelet_env(objects, pod)),
    }


def start_pods(objects, pods, unit):
    """Start every pod at once as the transient unit ``unit`` (a new name per scenario: a stopped unit may linger)."""
    for address, pod in zip(ADDRESSES, pods):
        spec = json.dumps(pod_spec(objects, pod)).encode()
        ssh(address, "umask 077 && cat > /root/k8sct/spec.json && python3 /root/k8sct/pod.py /root/k8sct/spec.json setup", data=spec)
    errors = []

    def start(address):
        try:
            ssh(address, "systemd-run --quiet --unit=%s --property=KillMode=mixed unshare --mount --propagation private "
                         "python3 /root/k8sct/pod.py /root/k8sct/spec.json exec" % unit)
        except subprocess.CalledProcessError as exc:
            errors.append("%s: %s" % (address, exc.stderr))
    threads = [threading.Thread(target=start, args=(a,)) for a in ADDRESSES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [], errors
    return time.monotonic()


def mesh_info_playbook(folder, nodes, dial):
    """Run beamops.cluster.mesh_info from a playbook (the cookie in a 0600 vars file, never on a command line)."""
    variables = folder / "mesh.yml"
    variables.write_text(yaml.safe_dump({"nodes": nodes, "cookie": COOKIE, "dial": dial}))
    variables.chmod(0o600)
    play = folder / "mesh.yml.play"
    play.write_text(yaml.safe_dump([{"name": "mesh", "hosts": "localhost", "connection": "local", "gather_facts": False,
                                     "vars_files": [str(variables)],
                                     "tasks": [{"name": "Ask every node", "beamops.cluster.mesh_info": {
                                         "nodes": "{{ nodes }}", "cookie": "{{ cookie }}", "dial": "{{ dial }}", "timeout": 10},
                                         "register": "mesh"},
                                         {"name": "Show", "ansible.builtin.debug": {"msg": "{{ mesh | to_json }}"}}]}]))
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(play)], capture_output=True, text=True,
                          timeout=300, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="json"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert COOKIE not in proc.stdout
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    return tasks[0]["hosts"]["localhost"]


def test_the_lab_serves_what_coredns_would_for_the_headless_service(lab):
    objects = m.build(SCENARIOS[0][1])["objects"]
    pods = m.cluster_pods(objects, addresses=ADDRESSES)
    records = serve_dns(objects, pods, lab)
    service = "meshprobe-headless.k8sct.svc.cluster.local"
    assert dns_query(service, "A") == sorted(ADDRESSES)
    assert dns_query("meshprobe-1.%s" % service, "A") == [ADDRESSES[1]]
    srv = dns_query(service, "SRV")
    assert srv == sorted(records["SRV"][service]) and len(srv) == 6  # 3 pods x the named ports epmd and dist
    assert dns_query("_dist._tcp.%s" % service, "SRV") == sorted((0, 33, 9100, "meshprobe-%d.%s" % (i, service)) for i in range(3))


def test_bad_dns_records_are_refused_before_anything_changes(lab):
    proc = playbook("lab_up", "-e", "lab_name=" + LAB, "-e", "lab_network=" + NETWORK, "-e", "lab_hosts=3",
                    "-e", '{"lab_dns_records": [{"name": "x.cluster.local", "type": "SRV", "target": "y.cluster.local", "port": 0}]}',
                    check=False)
    assert proc.returncode != 0 and "lab_dns_records has records the lab cannot serve: not a port: 0" in proc.out
    assert dns_query("meshprobe-headless.k8sct.svc.cluster.local", "A") == sorted(ADDRESSES)  # dnsmasq kept its records


@pytest.mark.parametrize("name,inputs", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_lab_hosts_playing_the_pods_form_the_mesh_under_the_rendered_names(lab, name, inputs):
    result = m.build(inputs)
    assert result["errors"] == []
    objects = result["objects"]
    pods = m.cluster_pods(objects, addresses=ADDRESSES)
    serve_dns(objects, pods, lab)
    nodes = sorted(m.pod_node_name(objects, pod) for pod in pods)
    for pod in pods:
        assert m.dialled_names(objects, pods, pod, ZONE) == nodes
    dial = dict((m.pod_node_name(objects, pod), "%s:%d" % (pod["ip"], inputs.get("dist_port", 9100))) for pod in pods)

    unit = "k8sct-%s" % name
    started = start_pods(objects, pods, unit)
    try:
        converged, report, _after_ms, attempts = wait_for_mesh(nodes, COOKIE, timeout=90, poll_ms=100, dial=dial)
        took = time.monotonic() - started
        print("\ncontract %s: 3 lab hosts as pods, full mesh %.2f s after the pods started (%d reports, polling_interval 5000 ms, "
              "names %s)" % (name, took, attempts, ", ".join(nodes)))
        assert converged, report
        mesh = mesh_info_playbook(lab, nodes, dial)
        assert mesh["full_mesh"] is True and sorted(mesh["members"]) == nodes
        for node in nodes:
            assert mesh["per_node"][node]["reachable"] and mesh["per_node"][node]["name"] == node
        # The pods ran as the rendered user, with the rendered node name, and RELEASE_TMP on the writable emptyDir.
        for address, pod in zip(ADDRESSES, pods):
            out = ssh(address, "pid=$(systemctl show -p MainPID --value %s); " % unit +
                               "for p in $pid $(pgrep -P $pid) $(pgrep -x beam.smp); do stat -c %u:%g /proc/$p; done | sort -u; "
                               "awk '$5 == \"/\" {print $6}' /proc/$(pgrep -x beam.smp | head -1)/mountinfo | cut -d, -f1; "
                               "hostname").stdout.decode().split()
            assert out == ["10001:10001", "ro", pod["hostname"] or pod["name"]], out
    finally:
        for address in ADDRESSES:
            ssh(address, "journalctl -u %s --no-pager -n 50 > /root/k8sct/%s.log; systemctl stop %s" % (unit, unit, unit), check=False)
