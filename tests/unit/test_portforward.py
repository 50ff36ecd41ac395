"""The Kubernetes port-forward of the mesh modules, through the official Python client, to real BEAM nodes.

There is no Kubernetes API server on this machine, so the API server is the ONLY stand-in: the client's
``kubernetes.stream.portforward`` is replaced by a function that returns an object shaped like the client's
``PortForward``, whose ``socket(port)`` is a real TCP connection to a real BEAM node's distribution listener
(an EPMD-less node named as a pod would be). Everything else is real: the kubeconfig is loaded by the client,
the real bound method ``CoreV1Api.connect_get_namespaced_pod_portforward`` is what reaches portforward(), and
the forwarders, the driver, the handshake and the nodes are the ones the modules use.
"""
import socket
import sys
import time

import pytest

import beamnodes
import otp
from ansible_collections.beamops.cluster.plugins.module_utils import erl_mesh, k8s_portforward, observer as obs

RELEASES = sorted(otp.runtimes())
POD_PORT = 9100  # the distribution port inside the pods
NAMESPACE = "shop"

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
  - name: lab
    cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}
users:
  - name: verifier
    user: {token: not-a-real-token}
contexts:
  - name: lab
    context: {cluster: lab, user: verifier, namespace: shop}
current-context: lab
"""


class StandInPortForward:
    """What ``kubernetes.stream.portforward`` returns, minus the API server: ``socket(port)`` reaches the pod."""

    def __init__(self, address, port, error=None):
        self.port = port
        self.sock = socket.create_connection(address, timeout=5)
        self.sock.settimeout(None)
        self._error = error
        if error:
            # The pod refused the port: the client closes its end of the tunnel (we read end of stream) and
            # keeps what the pod said on the error channel.
            self.sock.close()
            self.sock, far_end = socket.socketpair()
            far_end.close()

    def socket(self, port):
        assert port == self.port
        return self.sock

    def error(self, port):
        assert port == self.port
        return self._error

    def close(self):
        self.sock.close()


class StandInApiServer:
    """Plays the API server's part of portforward(): pods -> the real address of their node's listener."""

    def __init__(self, pods, refuse=None, pod_error=None):
        self.pods = pods
        self.refuse = refuse
        self.pod_error = pod_error
        self.calls = []

    def portforward(self, api_method, name, namespace, ports=None):
        from kubernetes.client import CoreV1Api
        from kubernetes.client.exceptions import ApiException
        assert api_method.__name__ == "connect_get_namespaced_pod_portforward"
        assert isinstance(api_method.__self__, CoreV1Api)
        self.calls.append((name, namespace, ports))
        if self.refuse:
            # What the client raises when the websocket upgrade is refused.
            raise ApiException(status=0, reason="Handshake status %s" % self.refuse)
        if namespace != NAMESPACE or name not in self.pods:
            raise ApiException(status=0, reason="Handshake status 404 Not Found")
        return StandInPortForward(("127.0.0.1", self.pods[name]), int(ports), self.pod_error)


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    """Two EPMD-less nodes per release named as StatefulSet pods: {release: [(node, pod, real port, BeamNode)]}.

    They stand apart (their names resolve nowhere, so they cannot dial each other): the tests are about
    reaching each one through its tunnel, not about their mesh."""
    workdir = str(tmp_path_factory.mktemp("pods"))
    specs = {}
    for rel in RELEASES:
        for index in range(2):
            specs[(rel, index)] = beamnodes.NodeSpec("app", release=rel, exact=True, dist_port=beamnodes.free_port(),
                                                     host="app-%d.app%s.shop.svc.cluster.local" % (index, rel))
    started = beamnodes.start_nodes(list(specs.values()), workdir)
    try:
        by_release = {}
        for (rel, index), node in zip(specs, started):
            by_release.setdefault(rel, []).append(node)
        yield dict((rel, [(n.name, "app-%d" % i, n.spec.dist_port, n) for i, n in enumerate(pair)])
                   for rel, pair in by_release.items())
    finally:
        beamnodes.stop_nodes(started)


@pytest.fixture
def kubeconfig(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG % beamnodes.free_port())
    return str(path)


def stand_in(monkeypatch, server):
    import kubernetes.stream
    monkeypatch.setattr(kubernetes.stream, "portforward", server.portforward)


@pytest.mark.parametrize("release", RELEASES)
def test_mesh_report_through_one_forwarder_per_pod(pods, kubeconfig, monkeypatch, release):
    members = pods[release]
    server = StandInApiServer(dict((pod, port) for _node, pod, port, _n in members))
    stand_in(monkeypatch, server)
    names = [node for node, _pod, _port, _n in members]
    with k8s_portforward.open_forwards(NAMESPACE, dict((node, pod) for node, pod, _p, _n in members), POD_PORT,
                                       kubeconfig=kubeconfig) as forwards:
        assert all(host == "127.0.0.1" for host, _port in forwards.dial.values())
        report = erl_mesh.mesh_report(names, members[0][3].cookie, timeout=10, dial=forwards.dial)
        for node in names:
            # The handshake proved each pod's node name through its tunnel; the pods stand apart.
            entry = report["per_node"][node]
            assert (entry["reachable"], entry["name"], entry["reason"]) == (True, node, "isolated"), entry
        # One tunnel per connection, opened through the real client call with the pod port.
        assert sorted(server.calls) == sorted((pod, NAMESPACE, str(POD_PORT)) for _n, pod, _p, _x in members)
        # mesh_wait keeps its sessions (and so its tunnels) from one attempt to the next.
        del server.calls[:]
        converged, _last, _ms, attempts = erl_mesh.wait_for_mesh(names, members[0][3].cookie, timeout=1.5,
                                                                 poll_ms=50, dial=forwards.dial)
        assert converged is False and attempts >= 3 and len(server.calls) == len(names), (attempts, server.calls)


@pytest.mark.parametrize("release", RELEASES)
def test_observer_through_the_forwarders(pods, kubeconfig, monkeypatch, release):
    members = pods[release]
    stand_in(monkeypatch, StandInApiServer(dict((pod, port) for _node, pod, port, _n in members)))
    names = [node for node, _pod, _port, _n in members]
    with k8s_portforward.open_forwards(NAMESPACE, dict((node, pod) for node, pod, _p, _n in members), POD_PORT,
                                       kubeconfig=kubeconfig) as forwards:
        with obs.Observer(names, members[0][3].cookie, interval=0.1, dial=forwards.dial) as observer:
            seen = observer.wait_until(lambda v: v[names[0]] == frozenset() and v[names[1]] == frozenset(), 10)
    assert seen is not None


@pytest.mark.parametrize("refuse, words", [("403 Forbidden", "RBAC get and create on pods/portforward"),
                                           ("401 Unauthorized", "credentials"),
                                           (None, "has no pod app-9 in namespace shop")])
def test_a_refused_tunnel_is_explained(pods, kubeconfig, monkeypatch, refuse, words):
    node, _pod, port, real = pods[RELEASES[0]][0]
    server = StandInApiServer({"app-0": port}, refuse=refuse)
    stand_in(monkeypatch, server)
    with k8s_portforward.open_forwards(NAMESPACE, {node: "app-9" if refuse is None else "app-0"}, POD_PORT,
                                       kubeconfig=kubeconfig) as forwards:
        report = erl_mesh.mesh_report([node], real.cookie, timeout=3, dial=forwards.dial)
        k8s_portforward.explain(report, forwards)
    entry = report["per_node"][node]
    assert entry["reason"] == "dist_port_unreachable" and words in entry["message"], entry
    assert "port-forward" in entry["message"]


def test_the_pods_error_channel_is_reported(pods, kubeconfig, monkeypatch):
    node, pod, port, real = pods[RELEASES[0]][0]
    error = "error forwarding port 9100 to pod 1f2e, uid : exit status 1: connect: connection refused"
    stand_in(monkeypatch, StandInApiServer({pod: port}, pod_error=error))
    with k8s_portforward.open_forwards(NAMESPACE, {node: pod}, POD_PORT, kubeconfig=kubeconfig) as forwards:
        report = k8s_portforward.explain(erl_mesh.mesh_report([node], real.cookie, timeout=3, dial=forwards.dial),
                                         forwards)
    assert report["per_node"][node]["reason"] == "dist_port_unreachable"
    assert "connection refused" in report["per_node"][node]["message"]


def test_a_missing_client_names_the_pip_package(monkeypatch, kubeconfig):
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # what an interpreter without the package sees
    with pytest.raises(k8s_portforward.MissingClient) as err:
        k8s_portforward.open_forwards(NAMESPACE, {"app@app-0.x": "app-0"}, POD_PORT, kubeconfig=kubeconfig)
    assert "pip install 'kubernetes>=24.2.0'" in str(err.value)


@pytest.mark.parametrize("kwargs, words", [
    (dict(namespace=""), "port_forward.namespace is required"),
    (dict(pods={}), "port_forward.pods must map node names to pod names"),
    (dict(pods={"app@h": 7}), "port_forward.pods: the pod of app@h"),
    (dict(port=None), "port_forward.port is required"),
    (dict(port=70000), "port_forward.port must be a TCP port"),
    (dict(kubeconfig="/nonexistent/kubeconfig"), "port_forward.kubeconfig: /nonexistent/kubeconfig does not exist"),
    (dict(context="elsewhere"), "port_forward.context"),
])
def test_bad_input_names_the_suboption(kubeconfig, kwargs, words):
    arguments = dict(namespace=NAMESPACE, pods={"app@h": "app-0"}, port=POD_PORT, kubeconfig=kubeconfig)
    arguments.update(kwargs)
    with pytest.raises(ValueError) as err:
        k8s_portforward.open_forwards(**arguments)
    assert words in str(err.value)


def test_the_kubeconfig_defaults_to_the_environment_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("K8S_AUTH_KUBECONFIG", "/etc/k8s/admin.conf")
    assert k8s_portforward.kubeconfig_path() == "/etc/k8s/admin.conf"
    assert k8s_portforward.kubeconfig_path("/x") == "/x"
    monkeypatch.delenv("K8S_AUTH_KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert k8s_portforward.kubeconfig_path() == str(tmp_path / ".kube" / "config")


def test_closing_the_forwarders_frees_their_ports(kubeconfig):
    forwards = k8s_portforward.open_forwards(NAMESPACE, {"app@h": "app-0"}, POD_PORT, kubeconfig=kubeconfig)
    address = forwards.dial["app@h"]
    socket.create_connection(address, timeout=2).close()
    forwards.close()
    time.sleep(0.1)
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=2)
