# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes port-forwards for the mesh modules: one local listener per pod, tunnelled through the API server.

Nodes in pods are often not reachable from the controller (a cluster network, NAT). ``open_forwards`` opens,
in the calling process, one listener per pod on 127.0.0.1 (an ephemeral port); every connection made to it
is carried to the pod's distribution port through the API server by the official Python client
(``kubernetes.stream.portforward`` on ``CoreV1Api.connect_get_namespaced_pod_portforward``, the call behind
``kubectl port-forward``). The nodes are then dialled at those listeners (``erl_driver`` ``dial``); the
handshake still proves each node's name.

Needs the ``kubernetes`` Python package (>= 24.2.0) where the module runs (the controller), imported only
when a port-forward is asked for, and RBAC ``get`` and ``create`` on ``pods/portforward`` in the namespace.

Public API
==========
``open_forwards(namespace, pods, port, kubeconfig=None, context=None, api=None) -> Forwards``
    ``pods`` maps node names to pod names; ``port`` is the distribution port inside the pods. The kubeconfig
    defaults to ``$K8S_AUTH_KUBECONFIG``, then ``~/.kube/config``. Bad input raises ``ValueError`` naming the
    ``port_forward`` suboption; a missing client raises ``MissingClient``.
``Forwards.dial`` -> ``{node: ("127.0.0.1", local port)}``; ``Forwards.errors(node)`` -> what failed in the
    tunnels of that node (API server refusals, the pod's error channel); ``Forwards.close()``.
``explain(report, forwards)``
    In a mesh report, gives each unreachable node whose tunnel failed the reason ``dist_port_unreachable``
    and a message that says what the API server or the pod answered.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import select
import socket
import threading

PIP_PACKAGE = "kubernetes"
MIN_VERSION = "24.2.0"


class MissingClient(ImportError):
    """The Kubernetes Python client is not installed where the module runs."""


def _kubernetes():
    try:
        from kubernetes import client, config  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise MissingClient("port_forward needs the Kubernetes Python client on the controller: pip install "
                            "'%s>=%s' (%s)" % (PIP_PACKAGE, MIN_VERSION, exc))
    return client, config


def kubeconfig_path(kubeconfig=None):
    """The kubeconfig to use: the option, else $K8S_AUTH_KUBECONFIG, else ~/.kube/config."""
    return kubeconfig or os.environ.get("K8S_AUTH_KUBECONFIG") or os.path.expanduser("~/.kube/config")


def core_v1_api(kubeconfig=None, context=None):
    """A ``CoreV1Api`` with its own API client (the port-forward call swaps the client's request method
    while it runs, so concurrent tunnels must not share one)."""
    client, config = _kubernetes()
    path = kubeconfig_path(kubeconfig)
    if not os.path.isfile(path):
        raise ValueError("port_forward.kubeconfig: %s does not exist (set kubeconfig, or K8S_AUTH_KUBECONFIG)" % path)
    try:
        api_client = config.new_client_from_config(config_file=path, context=context)
    except config.ConfigException as exc:
        field = "context" if context else "kubeconfig"
        raise ValueError("port_forward.%s: the kubeconfig %s cannot be used: %s" % (field, path, exc))
    return client.CoreV1Api(api_client)


def describe_failure(exc, namespace, pod):
    """One sentence for a failed tunnel, with the fix for the usual causes."""
    text = str(getattr(exc, "reason", None) or exc)
    words = set(text.replace(":", " ").replace(",", " ").replace("(", " ").replace(")", " ").split())
    if "403" in words or "Forbidden" in words:
        return ("the API server refused the port-forward to pod %s in namespace %s (403): the credentials need "
                "RBAC get and create on pods/portforward there" % (pod, namespace))
    if "404" in words:
        return "the API server has no pod %s in namespace %s (404)" % (pod, namespace)
    if "401" in words or "Unauthorized" in words:
        return "the API server did not accept the kubeconfig's credentials (401)"
    return "the port-forward to pod %s in namespace %s failed: %s" % (pod, namespace, text)


def _pump(a, b, closing):
    """Copy bytes both ways between two sockets until one side closes (or the forwarder closes)."""
    pairs = {a.fileno(): (a, b), b.fileno(): (b, a)}
    while not closing.is_set():
        try:
            ready = select.select(list(pairs), [], [], 0.5)[0]
        except (OSError, ValueError):  # one side was closed under us
            return
        for fd in ready:
            source, target = pairs[fd]
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            try:
                target.sendall(data)
            except OSError:
                return


class PodForwarder:
    """A listener on 127.0.0.1 whose every connection is tunnelled to ``pod``:``port``."""

    def __init__(self, core_v1, namespace, pod, port):
        self.core_v1 = core_v1
        self.namespace = namespace
        self.pod = pod
        self.port = port
        self.failures = []
        self._closing = threading.Event()
        self._opening = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.5)
        self.address = self._listener.getsockname()[:2]
        self._threads = []
        self._accepter = threading.Thread(target=self._accept, name="port-forward %s" % pod, daemon=True)
        self._accepter.start()

    def _accept(self):
        while not self._closing.is_set():
            try:
                conn = self._listener.accept()[0]
            except socket.timeout:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn):
        from kubernetes import stream  # pylint: disable=import-outside-toplevel
        try:
            try:
                with self._opening:
                    tunnel = stream.portforward(self.core_v1.connect_get_namespaced_pod_portforward, self.pod,
                                                self.namespace, ports=str(self.port))
                remote = tunnel.socket(self.port)
            except Exception as exc:  # pylint: disable=broad-except
                # The client raises ApiException, ApiValueError or websocket errors: all end this connection.
                self.failures.append(describe_failure(exc, self.namespace, self.pod))
                return
            try:
                _pump(conn, remote, self._closing)
            finally:
                error = tunnel.error(self.port)
                if error:
                    self.failures.append("pod %s in namespace %s answered on port %d: %s"
                                         % (self.pod, self.namespace, self.port, error.strip()))
                tunnel.close()
        finally:
            conn.close()

    def close(self):
        self._closing.set()
        self._listener.close()
        self._accepter.join(2)
        for thread in self._threads:
            thread.join(2)


class Forwards:
    """The forwarders of one module run: ``dial`` for the driver, ``errors(node)``, ``close()``."""

    def __init__(self, forwarders):
        self.forwarders = forwarders
        self.dial = dict((node, f.address) for node, f in forwarders.items())

    def errors(self, node):
        forwarder = self.forwarders.get(node)
        return list(forwarder.failures) if forwarder is not None else []

    def close(self):
        for forwarder in self.forwarders.values():
            forwarder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def validate(namespace, pods, port):
    """Check the port_forward suboptions; raises ValueError naming the one that is wrong."""
    if not isinstance(namespace, str) or not namespace:
        raise ValueError("port_forward.namespace is required: the namespace of the pods")
    if not isinstance(pods, dict) or not pods:
        raise ValueError("port_forward.pods must map node names to pod names, e.g. {app@app-0.app: app-0}")
    for node, pod in pods.items():
        if not isinstance(pod, str) or not pod:
            raise ValueError("port_forward.pods: the pod of %s must be a pod name" % node)
    if port is None:
        raise ValueError("port_forward.port is required: the distribution port inside the pods (or set dist_port)")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError("port_forward.port must be a TCP port between 1 and 65535, not %r" % (port,))


def open_forwards(namespace, pods, port, kubeconfig=None, context=None, api=None):
    """One forwarder per pod; see the module docstring. ``api(kubeconfig, context)`` makes a CoreV1Api.

    With ``namespace`` None (no port_forward option) there is nothing to open: an empty ``Forwards``.
    """
    if namespace is None and pods is None:
        return Forwards({})
    validate(namespace, pods, port)
    api = api or core_v1_api
    forwarders = {}
    try:
        for node, pod in pods.items():
            forwarders[node] = PodForwarder(api(kubeconfig, context), namespace, pod, port)
    except BaseException:
        Forwards(forwarders).close()
        raise
    return Forwards(forwarders)


def explain(report, forwards):
    """Say, for every unreachable node whose tunnel failed, what the API server or the pod answered."""
    for node, entry in report["per_node"].items():
        failures = forwards.errors(node)
        if not entry["reachable"] and failures and entry["reason"] not in ("cookie_rejected", "name_mismatch"):
            entry["reason"] = "dist_port_unreachable"
            entry["message"] = "%s cannot be reached through its port-forward: %s." % (node, failures[-1].rstrip("."))
    return report
