"""meshprobe's Kubernetes API strategy (libcluster 3.5's `Cluster.Strategy.Kubernetes`) and the JSON decoder
it needs on OTP 25, run for real: release nodes on loopback asking an HTTPS server over TLS.

No Kubernetes API server can run here, so `KubernetesApiStandIn` stands in for one: a TLS server in the
test process that answers `GET /api/v1/namespaces/<ns>/endpoints|pods?labelSelector=...` with EndpointsList
and PodList documents shaped as the API server returns them (metadata, subsets with addresses and
notReadyAddresses, targetRef, pod spec and status), a Status document for errors, and checks the bearer
token. It listens on port 443 of a random 127.x.y.z address, because libcluster always dials
`https://<host>/` (port 443); the nodes find it, and each other, through host entries in their inetrc.
"""
import json
import os
import random
import re
import ssl
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from ansible_collections.beamops.cluster.plugins.module_utils import erl_term
from beamnodes import make_test_pki
from test_testapps import (  # pylint: disable=unused-import  # noqa: F401 (the fixtures are used by name)
    Atom, cut_pair, epmdless_zflags, free_port, libcluster_config, log_count, members, processes, pytestmark,
    releases, start_meshprobe, start_observer, suffix, tarballs, wait_for, wait_members)

SELECTOR = "app.kubernetes.io/name=meshprobe,tier in (web, api)"
NODE_IPS = ("127.0.0.2", "127.0.0.3")


# ---------------------------------------------------------------------------------------------
# JSON decoder (Cluster.JSON), through `bin/meshprobe eval` on the release


def decode_in_release(rel, tmp_path, documents):
    """Cluster.JSON.decode/1 of each binary in `documents`, run by the release; the results as decoded terms."""
    cases = tmp_path / ("json-cases-%s.etf" % suffix())
    cases.write_bytes(erl_term.encode(list(documents)))
    script = ('for c <- :erlang.binary_to_term(File.read!(System.fetch_env!("JSON_CASES"))), '
              'do: IO.puts("@@" <> Base.encode16(:erlang.term_to_binary(Cluster.JSON.decode(c))))')
    env = dict(os.environ, JSON_CASES=str(cases), RELEASE_COOKIE="unused-%s" % suffix(), RELEASE_DISTRIBUTION="none")
    env.pop("ERL_ZFLAGS", None)
    out = subprocess.run([str(rel.bin), "eval", script], env=env, capture_output=True, text=True, timeout=120, check=True)
    results = [erl_term.decode(bytes.fromhex(line[2:])) for line in out.stdout.splitlines() if line.startswith("@@")]
    assert len(results) == len(documents), out.stdout + out.stderr
    return results


def as_elixir(value):
    """A json.loads() value as Cluster.JSON gives it, decoded from the term format: strings as binaries,
    null as the atom nil."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if value is None:
        return Atom("nil")
    if isinstance(value, list):
        return [as_elixir(v) for v in value]
    if isinstance(value, dict):
        return dict((k.encode("utf-8"), as_elixir(v)) for k, v in value.items())
    return value


def random_text(rng):
    pool = ['a', 'Z', ' ', '"', '\\', '/', '\b', '\f', '\n', '\r', '\t', '\x00', '\x1f', '\x7f', '\u00e9', '\u2028',
            '\ufeff', '\uffff', '\U0001f600', '\U0010ffff', 'k8s', '{', '}', '[', ']', ',', ':']
    return "".join(rng.choice(pool) for _position in range(rng.randint(0, 12)))


def random_value(rng, depth=0):
    kind = rng.randint(0, 9 if depth < 4 else 5)
    if kind == 0:
        return random_text(rng)
    if kind == 1:
        return rng.choice([0, -1, 7, 2 ** 31, -(2 ** 63), 2 ** 70, rng.randint(-10 ** 6, 10 ** 6)])
    if kind == 2:
        return rng.choice([0.5, -0.0, 1e-300, 1.7976931348623157e308, 5e-324, rng.uniform(-1e6, 1e6),
                           rng.uniform(-1, 1) * 10 ** rng.randint(-200, 200)])
    if kind in (3, 4, 5):
        return rng.choice([True, False, None, ""])
    if kind in (6, 7):
        return [random_value(rng, depth + 1) for _item in range(rng.randint(0, 4))]
    return dict((random_text(rng), random_value(rng, depth + 1)) for _key in range(rng.randint(0, 4)))


def test_json_decoder_agrees_with_pythons_on_valid_documents(releases, tmp_path):
    """Random documents (every escape, non-BMP characters written raw and as surrogate pairs, big
    integers, extreme floats, any whitespace) and the API's own list documents decode to what Python's
    json module reads from them; a repeated key keeps its last value, as in Jason and Python."""
    rng = random.Random(20261201)
    texts = [b'{"a": 1, "a": 2}', b' \t\r\n[1E5, -2e-3, 0.1e+2, -0, 1.5E+10]\n', b'"\\u00e9\\ud83d\\ude00\\/"', b'null']
    api_documents = (endpoints_list("beamops", "meshprobe", [("127.0.0.2", "mp-0", None)], [("127.0.0.4", "mp-2", None)]),
                     pod_list("beamops", [pod("mp-0", "127.0.0.2", ready=True)]))
    texts += [json.dumps(doc).encode() for doc in api_documents]
    for _document in range(300):
        doc = random_value(rng)
        text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 0, 2, "\t"]),
                          separators=rng.choice([None, (",", ":"), (" , ", " : ")]))
        texts.append(text.encode("utf-8", "surrogatepass"))
    results = decode_in_release(releases("meshprobe-0.1.0.tar.gz"), tmp_path, texts)
    for text, result in zip(texts, results):
        assert result == (Atom("ok"), as_elixir(json.loads(text))), text


# (input, reason, byte offset) for texts RFC 8259 does not allow
JSON_REFUSALS = [
    (b"", "unexpected_end", 0), (b"  ", "unexpected_end", 2), (b"[1,]", "unexpected_byte", 3),
    (b'{"a":1,}', "expected_string_key", 7), (b"{'a':1}", "expected_string_key", 1), (b'{"a" 1}', "expected_colon", 5),
    (b"[1 2]", "expected_comma_or_closing_bracket", 3), (b'{"a":1 "b":2}', "expected_comma_or_closing_brace", 7),
    (b"01", "trailing_data", 1), (b"[1] x", "trailing_data", 4), (b"1.", "invalid_number", 0), (b".5", "unexpected_byte", 0),
    (b"+1", "unexpected_byte", 0), (b"-", "invalid_number", 0), (b"1e", "invalid_number", 0), (b"NaN", "unexpected_byte", 0),
    (b"Infinity", "unexpected_byte", 0), (b"1e400", "number_out_of_range", 0), (b"tru", "unexpected_byte", 0),
    (b'"a\tb"', "control_character_in_string", 2), (b'"\\x"', "invalid_escape", 2), (b'"\\u12G4"', "invalid_unicode_escape", 2),
    (b'"\\ud800"', "lone_surrogate", 2), (b'"\\udc00"', "lone_surrogate", 2), (b'"\\ud800\\u0041"', "lone_surrogate", 2),
    (b'"\xc0\x80"', "invalid_utf8", 1), (b'"\xed\xa0\x80"', "invalid_utf8", 1), (b'"\xff"', "invalid_utf8", 1),
    (b'"abc', "unterminated_string", 4), (b"/* c */ 1", "unexpected_byte", 0), (b"[" * 600, "too_deep", 512),
]


@pytest.fixture(scope="module")
def json_refusals(releases, tmp_path_factory):
    """Cluster.JSON.decode/1 of every JSON_REFUSALS input, from one release run made on first use."""
    found = {}

    def get(text):
        if not found:
            texts = [case[0] for case in JSON_REFUSALS]
            found.update(zip(texts, decode_in_release(releases("meshprobe-0.1.0.tar.gz"), tmp_path_factory.mktemp("json"),
                                                      texts)))
        return found[text]

    return get


@pytest.mark.parametrize("text, reason, offset", JSON_REFUSALS,
                         ids=["%d-%s" % (i, case[1]) for i, case in enumerate(JSON_REFUSALS)])
def test_json_decoder_refuses_what_rfc_8259_refuses(json_refusals, text, reason, offset):
    """Each refusal names the reason and the byte offset where the input went wrong."""
    assert json_refusals(text) == (Atom("error"), (Atom(reason), offset))


# ---------------------------------------------------------------------------------------------
# documents shaped like the Kubernetes API's


def endpoints_list(namespace, service, ready, not_ready):
    """An EndpointsList as `GET /api/v1/namespaces/<ns>/endpoints?labelSelector=...` returns it: the
    Service's Endpoints object (named like it, labels copied from the Service) with ready pods under
    `addresses` and others under `notReadyAddresses`, each with its targetRef; and a second, empty
    Endpoints object (a Service without endpoints has no `subsets`). Addresses: (ip, pod, hostname)."""
    def address(ip, pod_name, hostname):
        entry = {"ip": ip, "nodeName": "node-1",
                 "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod_name, "uid": str(uuid.uuid4())}}
        if hostname:
            entry["hostname"] = hostname
        return entry

    subset = {"addresses": [address(*a) for a in ready],
              "ports": [{"name": "epmd", "port": 4369, "protocol": "TCP"}]}
    if not_ready:
        subset["notReadyAddresses"] = [address(*a) for a in not_ready]
    meta = {"namespace": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "48213",
            "creationTimestamp": "2026-12-01T10:00:00Z", "labels": {"app.kubernetes.io/name": "meshprobe", "tier": "web"}}
    return {"kind": "EndpointsList", "apiVersion": "v1", "metadata": {"resourceVersion": "48220"},
            "items": [dict({"metadata": dict(meta, name=service)}, subsets=[subset]),
                      {"metadata": dict(meta, name=service + "-idle")}]}


def pod(name, ip, ready, hostname=None, subdomain=None, phase="Running", terminating=False):
    """One Pod as the API lists it; `ip` None for a pod that has none yet (Pending)."""
    spec = {"containers": [{"name": "meshprobe", "image": "meshprobe:0.1.0",
                            "ports": [{"name": "epmd", "containerPort": 4369, "protocol": "TCP"}]}],
            "nodeName": "node-1", "restartPolicy": "Always", "serviceAccountName": "meshprobe"}
    if hostname:
        spec.update(hostname=hostname, subdomain=subdomain)
    status = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                              "lastTransitionTime": "2026-12-01T10:00:05Z"}]}
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}], hostIP="10.0.0.10")
    meta = {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "48219", "creationTimestamp": "2026-12-01T10:00:00Z",
            "labels": {"app.kubernetes.io/name": "meshprobe", "tier": "web"}}
    if terminating:
        meta.update(deletionTimestamp="2026-12-01T10:05:00Z", deletionGracePeriodSeconds=30)
    return {"metadata": meta, "spec": spec, "status": status}


def pod_list(namespace, pods):
    for item in pods:
        item["metadata"]["namespace"] = namespace
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48220"}, "items": pods}


def status_document(code, reason, message):
    """The API's Status answer for a failed request."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": {"kind": "endpoints"}, "code": code}


# ---------------------------------------------------------------------------------------------
# the stand-in for the API server


class KubernetesApiStandIn:
    """An HTTPS server in this process answering like the Kubernetes API server (see the module docstring).

    lists: resource ("endpoints", "pods") -> list document; tokens: bearer tokens it accepts (401
    otherwise); status: 200, or an error code answered with a Status document instead (403 names the
    RBAC denial as the API server words it). Every request is recorded in `requests`.
    """

    def __init__(self, certfile, keyfile):
        self.lists = {}
        self.tokens = set()
        self.status = 200
        self.requests = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the API server

            def do_GET(self):  # noqa: N802 (the http.server API)
                api.answer(self)

            def log_message(self, *_args):
                pass

        for _attempt in range(20):
            self.address = "127.%d.%d.%d" % (random.randint(100, 250), random.randint(1, 250), random.randint(1, 250))
            try:
                self.httpd = ThreadingHTTPServer((self.address, 443), Handler)
                break
            except OSError:
                continue
        else:
            pytest.skip("no free 127.x.y.z:443 to stand in for the API server")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, handler):
        url = urlsplit(handler.path)
        match = re.match(r"^/api/v1/namespaces/([^/]*)/(endpoints|pods)$", url.path)
        token = handler.headers.get("Authorization", "")[len("Bearer "):]
        headers = {"Content-Type": "application/json", "Cache-Control": "no-cache, private", "Audit-Id": str(uuid.uuid4())}
        if not match:
            code, doc = 404, status_document(404, "NotFound", "the server could not find the requested resource")
        elif token not in self.tokens:
            code, doc = 401, status_document(401, "Unauthorized", "Unauthorized")
        elif self.status == 403:
            code, doc = 403, status_document(403, "Forbidden", (
                '%s is forbidden: User "system:serviceaccount:%s:meshprobe" cannot list resource "%s" in API group "" '
                'in the namespace "%s"') % (match.group(2), match.group(1), match.group(2), match.group(1)))
        elif self.status != 200:
            code, doc = self.status, status_document(self.status, "InternalError", "Internal error occurred: etcd timeout")
        else:
            code, doc = 200, self.lists[match.group(2)]
            if match.group(2) == "endpoints":
                headers["Warning"] = '299 - "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"'
        with self.lock:
            self.requests.append({"path": url.path, "query": url.query, "token": token, "code": code,
                                  "host": handler.headers.get("Host"), "namespace": match and match.group(1)})
        body = json.dumps(doc).encode()
        handler.send_response(code)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def answered(self, token, code=200):
        """How many requests with this token were answered with `code`."""
        with self.lock:
            return sum(1 for r in self.requests if r["token"] == token and r["code"] == code)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


API_HOSTS = ("kubernetes.default.svc.cluster.local", "kubernetes.default.svc.beamops.test", "kubernetes.default.svc.k8s.local")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_test_pki(str(tmp_path_factory.mktemp("pki")), servers={"api": list(API_HOSTS)})


@pytest.fixture
def api(pki):
    server = KubernetesApiStandIn(pki["api_cert"], pki["api_key"])
    yield server
    server.stop()


def service_account(tmp_path, label, token, namespace="beamops", ca=None):
    """A service-account directory as Kubernetes mounts it: token, namespace and (optionally) ca.crt."""
    path = tmp_path / ("sa-" + label)
    path.mkdir()
    (path / "token").write_text(token + "\n")
    (path / "namespace").write_text(namespace)
    if ca:
        (path / "ca.crt").write_bytes(open(ca, "rb").read())
    return path


def inetrc(tmp_path, entries):
    """An inetrc that resolves only the given host names ({ip: [names]}), from the file lookup."""
    path = tmp_path / ("inetrc-%s" % suffix())
    lines = ['{hosts_file, ""}.', '{resolv_conf, ""}.']
    lines += ["{host, {%s}, [%s]}." % (ip.replace(".", ","), ", ".join('"%s"' % n for n in names))
              for ip, names in entries.items()]
    path.write_text("\n".join(lines + ["{lookup, [file]}.", ""]))
    return path


def start_api_nodes(rel, processes, tmp_path, api, names, config, accounts, hosts, env=None):
    """One meshprobe node per name on NODE_IPS (EPMD-less, one port), each with the Kubernetes strategy
    (`config`, polling every 500 ms) and its own service account; `hosts` as for `inetrc`."""
    dist_port = free_port()
    rc = inetrc(tmp_path, hosts)
    nodes = []
    for index, (name, ip, account) in enumerate(zip(names, NODE_IPS, accounts)):
        node_config = dict(config, kubernetes_service_account_path=str(account).encode(), polling_interval=500)
        conf = libcluster_config(tmp_path / ("k8s-%d.config" % index), [("k8s", "Cluster.Strategy.Kubernetes", node_config)])
        nodes.append(start_meshprobe(rel, processes, tmp_path, name, epmdless_zflags(conf, ip, dist_port),
                                     dict(env or {}, ERL_INETRC=str(rc))))
    return nodes, dist_port


def start_listed_pair(releases, processes, tmp_path, api, cas):
    """Two nodes at NODE_IPS that the API's Endpoints list names (`:endpoints` lookup, `:ip` mode), each
    with its own service account: its own token (accepted by the API) and `cas[i]` as ca.crt (None:
    no ca.crt). Returns (nodes, names, service-account directories, distribution port)."""
    base = "k8sapi_%s" % suffix()
    names = ["%s@%s" % (base, ip) for ip in NODE_IPS]
    api.lists["endpoints"] = endpoints_list("beamops", "meshprobe", [(ip, "mp-%d" % i, None) for i, ip in enumerate(NODE_IPS)], [])
    accounts = []
    for index, ca in enumerate(cas):
        token = "token-%d-%s" % (index, suffix())
        api.tokens.add(token)
        accounts.append(service_account(tmp_path, str(index), token, ca=ca))
    config = {"kubernetes_node_basename": base.encode(), "kubernetes_selector": b"app=meshprobe"}
    nodes, dist_port = start_api_nodes(releases("meshprobe-0.1.0.tar.gz"), processes, tmp_path, api, names, config,
                                       accounts, {api.address: [API_HOSTS[0]]})
    return nodes, names, accounts, dist_port


def dialled(nodes):
    """Every node name the strategy dialled, on all nodes, from its log lines."""
    found = set()
    for node in nodes:
        found.update(re.findall(r'\[libcluster:k8s\] (?:connected to|unable to connect to) :"([^"]+)"', node.log_text()))
    return found


# ---------------------------------------------------------------------------------------------
# the Kubernetes API strategy

# lookup, mode, extra config, environment, API host, cluster name in node names
COMBINATIONS = [
    ("endpoints", "ip", {}, {}, API_HOSTS[0], "cluster"),
    ("endpoints", "dns", {"kubernetes_namespace": b"beamops"}, {"CLUSTER_DOMAIN": "beamops.test"}, API_HOSTS[1], "cluster"),
    ("endpoints", "hostname", {"kubernetes_service_name": b"meshprobe-headless"}, {}, API_HOSTS[0], "cluster"),
    ("pods", "ip", {}, {}, API_HOSTS[0], "cluster"),
    ("pods", "dns", {"kubernetes_cluster_name": b"k8s"}, {}, API_HOSTS[2], "k8s"),
    ("pods", "hostname", {"kubernetes_service_name": b"meshprobe-headless", "kubernetes_use_cached_resources": True},
     {}, API_HOSTS[0], "cluster"),
]


def node_host(mode, ip, pod_name, namespace, cluster):
    if mode == "ip":
        return ip
    if mode == "dns":
        return "%s.%s.pod.%s.local" % (ip.replace(".", "-"), namespace, cluster)
    return "%s.meshprobe-headless.%s.svc.%s.local" % (pod_name, namespace, cluster)


@pytest.mark.parametrize("lookup, mode, extra, env, api_host, cluster", COMBINATIONS,
                         ids=["%s-%s" % (c[0], c[1]) for c in COMBINATIONS])
def test_kubernetes_api_dials_the_names_of_each_lookup_and_mode(releases, api, pki, processes, tmp_path,
                                                                lookup, mode, extra, env, api_host, cluster):
    """Two nodes, each started under the name libcluster forms for its pod in this lookup and mode, find
    each other through the API. Endpoints: only ready addresses are dialled (a notReadyAddress is not).
    Pods: every pod with a podIP, Ready or not (a terminating one is dialled), none without one.
    The request: the namespace from the service account unless `kubernetes_namespace` is set, the API
    host from kubernetes_master + CLUSTER_DOMAIN (else <cluster_name>.local), the selector
    RFC 3986-encoded, `resourceVersion=0` first with `kubernetes_use_cached_resources`, each node's token."""
    rel = releases("meshprobe-0.1.0.tar.gz")
    namespace = "beamops" if "kubernetes_namespace" in extra else "beamops-sa"
    base = "k8sapi_%s" % suffix()
    pods = ["meshprobe-0", "meshprobe-1"]
    names = ["%s@%s" % (base, node_host(mode, ip, p, namespace, cluster)) for ip, p in zip(NODE_IPS, pods)]
    with_hostname = mode == "hostname"
    if lookup == "endpoints":
        api.lists["endpoints"] = endpoints_list(
            namespace, "meshprobe-headless", [(ip, p, p if with_hostname else None) for ip, p in zip(NODE_IPS, pods)],
            [("127.0.0.4", "meshprobe-2", "meshprobe-2" if with_hostname else None)])
        decoys = set()
    else:
        hostname = (lambda p: {"hostname": p, "subdomain": "meshprobe-headless"}) if with_hostname else (lambda p: {})
        api.lists["pods"] = pod_list(namespace, [pod(p, ip, ready=True, **hostname(p)) for ip, p in zip(NODE_IPS, pods)] + [
            pod("meshprobe-2", None, ready=False, phase="Pending", **hostname("meshprobe-2")),
            pod("meshprobe-3", "127.0.0.5", ready=False, terminating=True, **hostname("meshprobe-3"))])
        decoys = {"%s@%s" % (base, node_host(mode, "127.0.0.5", "meshprobe-3", namespace, cluster))}
    tokens = ["token-a-%s" % suffix(), "token-b-%s" % suffix()]
    api.tokens.update(tokens)
    accounts = [service_account(tmp_path, str(i), token, namespace="beamops-sa", ca=pki["ca"]) for i, token in enumerate(tokens)]
    config = dict({"kubernetes_node_basename": base.encode(), "kubernetes_selector": SELECTOR.encode(),
                   "kubernetes_ip_lookup_mode": Atom(lookup), "mode": Atom(mode)}, **extra)
    hosts = {api.address: [api_host]}
    for name, ip in zip(names, NODE_IPS):
        hosts.setdefault(ip, []).append(name.split("@")[1])
    nodes, _port = start_api_nodes(rel, processes, tmp_path, api, names, config, accounts, hosts, env)

    wait_members(nodes, names)
    wait_for(lambda: dialled(nodes) >= decoys, 10, lambda: "the decoys %s to be dialled: %s" % (decoys, dialled(nodes)))
    assert dialled(nodes) <= set(names) | decoys
    query = ("resourceVersion=0&" if "kubernetes_use_cached_resources" in extra else "") + "labelSelector=" + quote(SELECTOR, safe="")
    for token in tokens:
        asked = [r for r in api.requests if r["token"] == token]
        assert asked and all(r["code"] == 200 for r in asked), asked
        assert {(r["path"], r["query"], r["host"]) for r in asked} == {
            ("/api/v1/namespaces/%s/%s" % (namespace, lookup), query, api_host)}
    assert parse_qs(query)["labelSelector"] == [SELECTOR]


def test_kubernetes_api_rereads_the_token_keeps_the_set_on_errors_and_disconnects_on_403(
        releases, api, pki, processes, tmp_path):
    """Every round re-reads the token (a rotated projected token works at once). Any error other than
    403 (here 500 from the API) keeps the previous round's set, and every node of it is dialled each
    round: a pair cut during such errors meets again. A 403 (RBAC denies `list`) logs a warning and
    yields an empty list, which disconnects every node, until the API answers again."""
    nodes, names, accounts, dist_port = start_listed_pair(releases, processes, tmp_path, api, [pki["ca"], pki["ca"]])
    wait_members(nodes, names)

    # Token rotation: the file changes, the API accepts only the new token from then on.
    rotated = ["token-a2-%s" % suffix(), "token-b2-%s" % suffix()]
    for account, token in zip(accounts, rotated):
        (account / "token").write_text(token)
    api.tokens = set(rotated)
    for token in rotated:
        wait_for(lambda t=token: api.answered(t) >= 2, 10, "a request with the rotated token %s" % token)

    # 500: the previous set is kept and dialled every round.
    api.status = 500
    wait_for(lambda: all(api.answered(t, 500) for t in rotated), 10, "both nodes to get a 500")
    observer = start_observer(processes, tmp_path, host="127.0.0.9", dist_port=dist_port)
    cut_pair(observer, nodes, names)
    wait_members(nodes, names, timeout=10)
    assert "[libcluster:k8s] cannot query kubernetes (500 Internal Server Error)" in nodes[0].log_text()

    # 403: an empty list, so the pair is disconnected and stays apart.
    api.status = 403
    wait_for(lambda: [members(node) for node in nodes] == [[name] for name in names], 10, "the pair to be disconnected")
    denied = api.answered(rotated[0], 403)
    wait_for(lambda: api.answered(rotated[0], 403) >= denied + 2, 10, "two more denied rounds")
    assert [members(node) for node in nodes] == [[name] for name in names]
    log = nodes[0].log_text()
    assert ('[libcluster:k8s] cannot query kubernetes (unauthorized): endpoints is forbidden: User '
            '"system:serviceaccount:beamops:meshprobe" cannot list resource "endpoints"') in log
    assert sum(log_count(node, '[libcluster:k8s] disconnected from :"%s"' % other)
               for node, other in zip(nodes, names[::-1])) >= 1

    api.status = 200
    wait_members(nodes, names, timeout=10)


def test_kubernetes_api_verifies_the_server_against_ca_crt_only_when_it_exists(releases, api, pki, processes, tmp_path):
    """With a ca.crt in the service account the API server's certificate must chain to it (verify_peer):
    an unrelated CA makes every request fail (logged; nothing is listed). Without a ca.crt libcluster
    does not verify at all, so the same server is used whatever its certificate."""
    nodes, names, accounts, _port = start_listed_pair(releases, processes, tmp_path, api, [pki["other_ca"], None])
    tokens = [(account / "token").read_text().strip() for account in accounts]

    wait_members(nodes, names)  # the node without ca.crt dials the other
    wait_for(lambda: log_count(nodes[0], "[libcluster:k8s] request to kubernetes failed!") >= 2, 10,
             lambda: "the node with the wrong CA to log failed requests:\n" + nodes[0].log_text())
    assert "unknown_ca" in nodes[0].log_text() or "Unknown CA" in nodes[0].log_text(), nodes[0].log_text()
    assert api.answered(tokens[0]) == 0 and api.answered(tokens[1]) >= 1
    assert '[libcluster:k8s] connected to :"%s"' % names[0] in nodes[1].log_text()
