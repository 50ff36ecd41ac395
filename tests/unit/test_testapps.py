"""The test releases, built by scripts/build-testapps.sh and run for real on loopback.

meshprobe (Elixir) forms its cluster from the application env `:libcluster, :topologies` given in an
extra `-config` file through ERL_ZFLAGS, as a deployment does; erlprobe (Erlang) clusters with the
kernel's own means. Every node is a real BEAM started by the release's own start script; DNS-based
strategies ask a real dnsmasq bound to 127.0.0.1. Everything stays on 127.0.0.0/8, except the
partition tests, which run in network namespaces made by the test (mpt-*, 198.18.50.0/24); every
process the tests start is stopped by its PID.
"""
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from hashlib import sha256
from pathlib import Path

import pytest
from beamnodes import NodeSpec, start_nodes
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-testapps.sh"
BUILD_DIR = Path(os.environ.get("BEAMOPS_TESTAPPS_DIR", REPO / "build" / "testapps"))
COOKIE = "testapps-%08x" % random.getrandbits(32)
EXPECTED_TARBALLS = [
    "meshprobe-0.1.0.tar.gz", "meshprobe-0.2.0.tar.gz", "meshprobe-0.3.0-broken.tar.gz",
    "meshprobe-0.1.0-noruntime.tar.gz", "erlprobe-0.1.0.tar.gz", "erlprobe-0.2.0.tar.gz",
    "erlprobe-0.3.0-broken.tar.gz",
]

pytestmark = pytest.mark.skipif(not (shutil.which("mix") and shutil.which("rebar3")),
                                reason="needs elixir and rebar3 (apt-get install elixir rebar3)")


# ---------------------------------------------------------------------------------------------
# helpers


def free_port(kind=socket.SOCK_STREAM):
    """A port the kernel just handed out on 127.0.0.1 (the ephemeral range: high and random)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_tcp_and_udp():
    """A port free for both TCP and UDP on 127.0.0.1 (dnsmasq listens on both)."""
    for _attempt in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no port free for both TCP and UDP on 127.0.0.1")


def suffix():
    return "%06x" % random.getrandbits(24)


def http_get(port, path, host="127.0.0.1"):
    """(status, body) of GET http://host:port/path; (None, error) when nothing answers."""
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (host, port, path), timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (urllib.error.URLError, ConnectionError, socket.timeout) as err:
        return None, str(err)


def wait_for(predicate, timeout, what):
    """Poll `predicate` until it is true; `what` (text, or a function giving it, e.g. with the logs as
    they are at the timeout) says what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what() if callable(what) else what))
        time.sleep(0.2)


def erl_term(value):
    """Erlang term text for the few Python values a .config file here needs."""
    if isinstance(value, Atom):
        return "'%s'" % value.replace("\\", "\\\\").replace("'", "\\'")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return '<<"%s">>' % value.decode().replace("\\", "\\\\").replace('"', '\\"')
    if isinstance(value, str):
        return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')
    if isinstance(value, tuple):
        return "{%s}" % ", ".join(erl_term(v) for v in value)
    if isinstance(value, list):
        return "[%s]" % ", ".join(erl_term(v) for v in value)
    if isinstance(value, dict):
        return "[%s]" % ", ".join("{%s, %s}" % (erl_term(Atom(k)), erl_term(v)) for k, v in value.items())
    raise TypeError(value)


class Atom(str):
    """A Python string written as an Erlang atom."""


def libcluster_config(path, topologies, extra=None):
    """Write an Erlang .config file carrying `:libcluster, :topologies` (and other apps' keys)."""
    tops = [(Atom(name), [(Atom("strategy"), Atom("Elixir." + strategy)), (Atom("config"), config)])
            for name, strategy, config in topologies]
    # debug: every poll and heartbeat goes to the node's log, which a failing test prints.
    apps = [(Atom("libcluster"), [(Atom("debug"), True), (Atom("topologies"), tops)])]
    for app, keys in (extra or {}).items():
        apps.append((Atom(app), [(Atom(k), v) for k, v in keys.items()]))
    path.write_text(erl_term(apps) + ".\n")
    return path


class Release:
    """A release tarball unpacked once into its own directory."""

    def __init__(self, tarball, root):
        self.name = tarball.name.split("-")[0]
        self.root = root
        root.mkdir(parents=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(root)
        self.bin = root / "bin" / self.name


class Node:
    """One BEAM started by a release's start script in the foreground; stopped by its PID."""

    def __init__(self, release, node_name, env, logdir, command, prefix=()):
        self.release = release
        self.node_name = node_name
        self.log = logdir / ("%s.log" % node_name.replace("@", "_"))
        # A VM that fails to boot writes erl_crash.dump: into the test's directory, not the checkout.
        self.env = dict(os.environ, RELEASE_COOKIE=COOKIE, RELX_COOKIE=COOKIE,
                        ERL_CRASH_DUMP=str(logdir / ("%s.crash.dump" % node_name.replace("@", "_"))), **env)
        for key in ("ERL_AFLAGS", "ERL_FLAGS", "ELIXIR_ERL_OPTIONS", "ERL_LIBS"):
            if key not in env:
                self.env.pop(key, None)
        with open(self.log, "wb") as out:
            # The start scripts (and `ip netns exec`) exec, so this PID is the BEAM itself.
            self.proc = subprocess.Popen(list(prefix) + [str(release.bin), command], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_text(self):
        return self.log.read_text(errors="replace")

    def alive(self):
        return self.proc.poll() is None


@pytest.fixture
def processes():
    """Everything started in a test, stopped in reverse order by PID afterwards."""
    started = []
    yield started
    for item in reversed(started):
        item.stop()


class Process:
    """A helper daemon (epmd, dnsmasq) run in the foreground under our control."""

    def __init__(self, argv, log):
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_epmd(release, processes, tmp_path, prefix=(), address="127.0.0.1", port=None):
    """A private EPMD on a random port (or `port`) of `address` (the system one is shared with others)."""
    port = port or free_port()
    epmd = Process(list(prefix) + [str(next(release.root.glob("erts-*/bin/epmd"))), "-port", str(port),
                                   "-address", address], tmp_path / ("epmd-%s-%d.log" % (address, port)))
    processes.append(epmd)

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    if prefix:
        time.sleep(0.5)  # in another network namespace: not reachable from here to check
    else:
        wait_for(listening, 10, "epmd on 127.0.0.1:%d" % port)
    return port


def start_meshprobe(release, processes, tmp_path, node_name, zflags, env=None, prefix=()):
    http_port = free_port()
    node_env = {
        "RELEASE_DISTRIBUTION": "name",
        "RELEASE_NODE": node_name,
        "RELEASE_TMP": str(tmp_path / ("tmp-" + node_name.replace("@", "_"))),
        "MESHPROBE_HTTP_IP": "127.0.0.1",
        "MESHPROBE_HTTP_PORT": str(http_port),
        "ERL_ZFLAGS": zflags,
    }
    node_env.update(env or {})
    node = Node(release, node_name, node_env, tmp_path, "start", prefix)
    node.http_port = http_port
    processes.append(node)
    return node


def wait_healthy(node, timeout=30):
    def up():
        if not node.alive():
            raise AssertionError("%s exited:\n%s" % (node.node_name, node.log_text()))
        return http_get(node.http_port, "/health")[0] == 200

    wait_for(up, timeout, "/health of %s" % node.node_name)


def members(node):
    status, body = http_get(node.http_port, "/members")
    assert status == 200, body
    return sorted(body.split())


def wait_members(nodes, expected, timeout=30):
    expected = sorted(expected)
    for node in nodes:
        wait_healthy(node)
    for node in nodes:
        wait_for(lambda n=node: members(n) == expected, timeout,
                 lambda n=node: "%s to see exactly %s (log:\n%s)" % (n.node_name, expected, n.log_text()))


class DnsServer:
    """A running test dnsmasq: its process, the hosts file it answers from, the inetrc that points a BEAM at it."""

    def __init__(self, process, hosts_file, inetrc):
        self.process = process
        self.hosts_file = hosts_file
        self.inetrc = inetrc

    def reload(self):
        self.process.proc.send_signal(signal.SIGHUP)  # dnsmasq re-reads its hosts files


def start_dnsmasq(processes, tmp_path, hosts, srv=(), prefix=(), port=None, name="dns"):
    """dnsmasq answering only from `hosts` (lines "ip name") and SRV records, on 127.0.0.1:<random or port>.

    With `prefix` (`ip netns exec NS`) it runs in that namespace, where this process cannot ask it
    whether it answers; the polling strategies simply ask again at their next round.
    """
    port = port or free_port_tcp_and_udp()
    hosts_file = tmp_path / ("%s-hosts" % name)
    hosts_file.write_text("".join("%s %s\n" % pair for pair in hosts))
    argv = list(prefix) + [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
        "--bind-interfaces", "--listen-address=127.0.0.1", "--port=%d" % port, "--addn-hosts=%s" % hosts_file,
        "--local-ttl=1", "--pid-file=", "--user=root"]
    argv += ["--srv-host=%s,%s,%d,10,50" % record for record in srv]
    dnsmasq = Process(argv, tmp_path / ("%s-dnsmasq.log" % name))
    processes.append(dnsmasq)
    # inet_res options for the BEAM: only this server, no resolv.conf or hosts file (order matters:
    # `resolv_conf ""` clears the nameservers listed before it).
    inetrc = tmp_path / ("%s-inetrc" % name)
    inetrc.write_text('{resolv_conf, ""}.\n{hosts_file, ""}.\n{nameserver, {127,0,0,1}, %d}.\n{lookup, [dns]}.\n' % port)

    def answering():
        if dnsmasq.proc.poll() is not None:
            raise AssertionError("dnsmasq exited: %s" % dnsmasq.log.read_text())
        return dns_query_a(port, "localhost.invalid") is not None

    if not prefix:
        wait_for(answering, 10, "dnsmasq on 127.0.0.1:%d" % port)
    return DnsServer(dnsmasq, hosts_file, inetrc)


def dns_query_a(port, name):
    """Send one A query to 127.0.0.1:port; the rcode, or None when nothing answered."""
    query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.sendto(query, ("127.0.0.1", port))
            reply = sock.recv(512)
        except OSError:
            return None
    return reply[3] & 0x0F


def epmdless_zflags(config, ip, dist_port):
    """Emulator flags for a node without EPMD, listening on ip:dist_port (every node on the same port,
    so that several nodes with the same name part can live on different loopback addresses)."""
    return "-config %s -start_epmd false -erl_epmd_port %d -kernel inet_dist_use_interface {%s}" % (
        config, dist_port, ip.replace(".", ","))


def start_observer(processes, tmp_path, host="127.0.0.1", dist_port=None, env=None):
    """A hidden plain BEAM (tests/beamnodes.py) that reaches the meshprobe nodes by rpc without becoming
    a member of their mesh: hidden connections are not passed on, and no strategy lists it.

    dist_port: the EPMD-less nodes' shared port (the observer listens on it at `host`); env: e.g.
    ERL_EPMD_PORT of a private EPMD.
    """
    args = ["-hidden"]
    if dist_port:
        args += ["-kernel", "inet_dist_use_interface", "{%s}" % host.replace(".", ",")]
    observer = start_nodes([NodeSpec("obs", host=host, cookie=COOKIE, dist_port=dist_port, args=args, env=env)],
                           str(tmp_path))[0]
    processes.append(observer)
    return observer


def log_count(node, text):
    return node.log_text().count(text)


def cut_pair(observer, nodes, names):
    """Cut the two nodes' connection from both sides, as a lost link would (erlang:disconnect_node/1 run
    on each node by the observer), and wait until both logged the nodedown. Returns the time of the cut."""
    downs = [log_count(node, "membership: nodedown %s (" % other) for node, other in zip(nodes, names[::-1])]
    out = observer.eval("[rpc:call('%s', erlang, disconnect_node, ['%s']), rpc:call('%s', erlang, disconnect_node, ['%s'])]"
                        % (names[0], names[1], names[1], names[0]))
    cut_at = time.monotonic()
    assert out.startswith("[true,"), "the pair was not connected when it was to be cut: %s" % out
    for node, other, before in zip(nodes, names[::-1], downs):
        wait_for(lambda n=node, o=other, b=before: log_count(n, "membership: nodedown %s (" % o) > b, 10,
                 "%s to log the nodedown of %s" % (node.node_name, other))
    return cut_at


def strategy_connects(nodes, names, topology):
    """How many times the strategy of `topology` logged a connect to the other node, on both nodes."""
    return sum(log_count(node, '[libcluster:%s] connected to :"%s"' % (topology, other))
               for node, other in zip(nodes, names[::-1]))


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def tarballs():
    out = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    found = {name: BUILD_DIR / name for name in EXPECTED_TARBALLS}
    missing = [name for name, path in found.items() if not path.is_file()]
    assert not missing, "build-testapps.sh did not produce %s:\n%s" % (missing, out.stdout)
    return found


@pytest.fixture(scope="module")
def releases(tarballs, tmp_path_factory):
    """Unpack each release once per module, on first use."""
    root = tmp_path_factory.mktemp("releases")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = Release(tarballs[name], root / name.replace(".tar.gz", ""))
        return cache[name]

    return get


# ---------------------------------------------------------------------------------------------
# the build


def test_build_is_skipped_when_sources_are_unchanged(tarballs):
    before = {name: path.stat().st_mtime_ns for name, path in tarballs.items()}
    out = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=300, check=True)
    for name in EXPECTED_TARBALLS:
        assert "up to date  %s" % (BUILD_DIR / name) in out.stdout
    assert {name: path.stat().st_mtime_ns for name, path in tarballs.items()} == before
    sums = (BUILD_DIR / "SHA256SUMS").read_text()
    for name, path in tarballs.items():
        assert "%s  %s" % (sha256(path.read_bytes()).hexdigest(), name) in sums


def test_another_output_directory_gets_a_copy_of_the_same_build(tarballs, tmp_path):
    """A Molecule scenario's own directory is filled from the default build when the sources are the same: a copy
    with the same bytes (not a link, so a later rebuild of the default cannot change it), no second build."""
    out = subprocess.run([str(BUILD_SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=300, check=True)
    for name, path in tarballs.items():
        assert "copied      %s" % (tmp_path / name) in out.stdout, out.stdout
        copy = tmp_path / name
        assert not copy.is_symlink() and copy.read_bytes() == path.read_bytes()
    assert "built" not in out.stdout


def test_tarballs_carry_erts_libcluster_standin_and_runtime_config_as_named(tarballs):
    def names(tarball):
        with tarfile.open(tarball) as tar:
            return tar.getnames()

    with_rt = names(tarballs["meshprobe-0.1.0.tar.gz"])
    assert any(n.startswith("erts-") for n in with_rt)
    assert "lib/libcluster-3.5.0-meshprobe/ebin/libcluster.app" in with_rt
    assert "releases/0.1.0/runtime.exs" in with_rt
    assert not any(n.endswith("runtime.exs") for n in names(tarballs["meshprobe-0.1.0-noruntime.tar.gz"]))
    erl = names(tarballs["erlprobe-0.2.0.tar.gz"])
    assert any(n.startswith("erts-") for n in erl) and "releases/0.2.0/sys.config" in erl

    # Like libcluster 3.5, the stand-in needs inets and ssl (Kubernetes API over TLS) and crypto (Gossip
    # secret), so any release that depends on it carries and starts them.
    with tarfile.open(tarballs["meshprobe-0.1.0.tar.gz"]) as tar:
        app = tar.extractfile("lib/libcluster-3.5.0-meshprobe/ebin/libcluster.app").read().decode()
    applications = app.split("{applications,", 1)[1].split("]", 1)[0]
    for needed in ("inets", "ssl", "crypto"):
        assert needed in applications, app


# ---------------------------------------------------------------------------------------------
# meshprobe


def test_epmd_strategy_forms_a_3_node_mesh_and_ready_follows_peers(releases, processes, tmp_path):
    rel = releases("meshprobe-0.1.0.tar.gz")
    epmd_port = start_epmd(rel, processes, tmp_path)
    names = ["mp%s_%s@127.0.0.1" % (letter, suffix()) for letter in "abc"]
    config = libcluster_config(tmp_path / "extra.config",
                               [("mesh", "Cluster.Strategy.Epmd", {"hosts": [Atom(n) for n in names]})])
    env = {"ERL_EPMD_PORT": str(epmd_port), "MESHPROBE_EXPECTED_PEERS": "2"}

    first = start_meshprobe(rel, processes, tmp_path, names[0], "-config %s" % config, env)
    wait_healthy(first)
    assert http_get(first.http_port, "/health") == (200, "ok 0.1.0\n")
    assert http_get(first.http_port, "/ready") == (503, "peers 0 expected 2\n")

    # Epmd connects once at start (timeout :infinity): the later nodes dial the earlier ones.
    rest = [start_meshprobe(rel, processes, tmp_path, n, "-config %s" % config, env) for n in names[1:]]
    nodes = [first] + rest
    wait_members(nodes, names)
    for node in nodes:
        assert http_get(node.http_port, "/ready") == (200, "peers 2 expected 2\n")
    info = http_get(first.http_port, "/info")[1]
    assert "topologies mesh:Cluster.Strategy.Epmd" in info

    # Membership changes are logged with a UTC date and time.
    log = first.log_text()
    assert any(line[:4].isdigit() and line[4] == "-" and " [info] membership: nodeup %s;" % names[1] in line
               for line in log.splitlines()), log

    # A peer leaving is logged and /ready drops again.
    rest[1].stop()
    wait_for(lambda: http_get(first.http_port, "/ready")[0] == 503, 15, "/ready to drop to 503")
    assert "membership: nodedown %s" % names[2] in first.log_text()


@pytest.mark.parametrize("strategy", ["ErlangHosts", "LocalEpmd"])
def test_epmd_scanning_strategies_form_a_mesh(releases, processes, tmp_path, strategy):
    """ErlangHosts asks the EPMD of each host in .hosts.erlang (here found in $HOME); LocalEpmd asks
    the local one. Both connect once at start, so the last node to boot meshes everyone."""
    rel = releases("meshprobe-0.1.0.tar.gz")
    epmd_port = start_epmd(rel, processes, tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".hosts.erlang").write_text("'127.0.0.1'.\n")
    config = libcluster_config(tmp_path / "scan.config", [("scan", "Cluster.Strategy." + strategy, {})])
    names = ["sc%s_%s@127.0.0.1" % (letter, suffix()) for letter in "abc"]
    nodes = []
    for name in names:
        nodes.append(start_meshprobe(rel, processes, tmp_path, name, "-config %s" % config,
                                     {"ERL_EPMD_PORT": str(epmd_port), "HOME": str(home)}))
        wait_healthy(nodes[-1])
    wait_members(nodes, names)
    assert "[libcluster:scan] connected to :\"%s\"" % names[0] in nodes[2].log_text()


@pytest.mark.parametrize("strategy, timeout_ms", [("Epmd", 1000), ("Epmd", None), ("ErlangHosts", 1000),
                                                  ("ErlangHosts", None), ("LocalEpmd", None)])
def test_static_strategies_redial_a_cut_pair_only_with_a_timeout(releases, processes, tmp_path, strategy, timeout_ms):
    """libcluster's Epmd and ErlangHosts connect once at start unless `timeout` is set; with it they
    dial every listed node again each `timeout` ms, which joins a cut pair again. LocalEpmd has no
    timeout and never redials. The kernel does not reconnect by itself, so without a redial the pair
    stays apart (watched here for four times the retry interval)."""
    rel = releases("meshprobe-0.1.0.tar.gz")
    epmd_port = start_epmd(rel, processes, tmp_path)
    names = ["st%s_%s@127.0.0.1" % (letter, suffix()) for letter in "ab"]
    home = tmp_path / "home"
    home.mkdir()
    (home / ".hosts.erlang").write_text("'127.0.0.1'.\n")
    config = {"hosts": [Atom(n) for n in names]} if strategy == "Epmd" else {}
    if timeout_ms:
        config["timeout"] = timeout_ms
    conf = libcluster_config(tmp_path / "static.config", [("static", "Cluster.Strategy." + strategy, config)])
    env = {"ERL_EPMD_PORT": str(epmd_port), "HOME": str(home)}
    nodes = []
    for name in names:  # one after the other: the second finds the first at start
        nodes.append(start_meshprobe(rel, processes, tmp_path, name, "-config %s" % conf, env))
        wait_healthy(nodes[-1])
    wait_members(nodes, names)
    observer = start_observer(processes, tmp_path, env={"ERL_EPMD_PORT": str(epmd_port)})
    connects = strategy_connects(nodes, names, "static")

    cut_at = cut_pair(observer, nodes, names)
    if timeout_ms:
        wait_members(nodes, names, timeout=10)
        print("%s timeout %d: pair connected again %.2f s after the cut" % (strategy, timeout_ms, time.monotonic() - cut_at))
        assert strategy_connects(nodes, names, "static") > connects
    else:
        time.sleep(4)
        assert [members(node) for node in nodes] == [[name] for name in names]
        assert strategy_connects(nodes, names, "static") == connects


@pytest.mark.parametrize("tarball, runtime_exs", [("meshprobe-0.1.0.tar.gz", True),
                                                  ("meshprobe-0.1.0-noruntime.tar.gz", False)])
def test_topology_from_extra_config_in_erl_zflags(releases, processes, tmp_path, tarball, runtime_exs):
    """The topology reaches the release from `-config FILE` in ERL_ZFLAGS, with and without runtime.exs.

    Keys the release's own build-time config also sets (meshprobe's `set_at_build`) behave
    differently: Elixir's runtime config provider re-applies build-time config over them when a
    config/runtime.exs exists; without one, the later -config file wins.
    """
    rel = releases(tarball)
    epmd_port = start_epmd(rel, processes, tmp_path)
    a, b = ("zf%s_%s@127.0.0.1" % (letter, suffix()) for letter in "ab")
    config = libcluster_config(tmp_path / "extra.config",
                               [("from_zflags", "Cluster.Strategy.Epmd", {"hosts": [Atom(a), Atom(b)]})],
                               extra={"meshprobe": {"expected_peers": 1, "set_at_build": b"extra"},
                                      "kernel": {"net_ticktime": 17}})
    env = {"ERL_EPMD_PORT": str(epmd_port)}
    nodes = [start_meshprobe(rel, processes, tmp_path, n, "-config %s" % config, env) for n in (a, b)]
    wait_members(nodes, [a, b])
    info = http_get(nodes[0].http_port, "/info")[1]
    assert "topologies from_zflags:Cluster.Strategy.Epmd" in info
    assert ("runtime_exs_loaded %s" % str(runtime_exs).lower()) in info
    assert "expected_peers 1\n" in info
    assert ("set_at_build %s\n" % ("build" if runtime_exs else "extra")) in info
    assert http_get(nodes[0].http_port, "/ready") == (200, "peers 1 expected 1\n")

    # A kernel key from the same file takes effect too (asked over distribution with `bin/meshprobe rpc`).
    rpc_env = dict(nodes[0].env)
    rpc_env.pop("ERL_ZFLAGS")
    out = subprocess.run([str(rel.bin), "rpc", "IO.puts(:net_kernel.get_net_ticktime())"], env=rpc_env,
                         capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "17"


def test_broken_version_fails_its_health_check(releases, processes, tmp_path):
    rel = releases("meshprobe-0.3.0-broken.tar.gz")
    node = start_meshprobe(rel, processes, tmp_path, "unused", "", {"RELEASE_DISTRIBUTION": "none"})
    wait_for(lambda: http_get(node.http_port, "/health")[0] is not None, 30, "meshprobe http")
    assert http_get(node.http_port, "/health") == (500, "broken 0.3.0-broken\n")
    assert http_get(node.http_port, "/ready")[0] == 200  # expected_peers 0: it is "ready", only unhealthy


def test_bad_setting_stops_the_boot_with_a_message_naming_it(releases, processes, tmp_path):
    rel = releases("meshprobe-0.1.0.tar.gz")
    node = start_meshprobe(rel, processes, tmp_path, "unused", "", {"RELEASE_DISTRIBUTION": "none",
                                                                    "MESHPROBE_HTTP_PORT": "http"})
    assert node.proc.wait(timeout=60) != 0
    assert 'MESHPROBE_HTTP_PORT="http" is not valid: set it to an integer in 1..65535' in node.log_text()


# ---- Gossip


def gossip_packet(secret, node_name):
    """A heartbeat exactly as libcluster 3.5 builds it, made here independently of meshprobe."""
    name = node_name.encode()
    term = bytes([131, 116, 0, 0, 0, 1, 119, 4]) + b"node" + bytes([119, len(name)]) + name
    plain = b"heartbeat::" + term
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(sha256(secret).digest()), modes.CBC(iv)).encryptor()
    return iv + enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()


def open_gossip_packet(secret, packet):
    """Decrypt a heartbeat with the libcluster format; the node name in it."""
    iv, body = packet[:16], packet[16:]
    dec = Cipher(algorithms.AES(sha256(secret).digest()), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    plain = unpadder.update(dec.update(body) + dec.finalize()) + unpadder.finalize()
    prefix = b"heartbeat::\x83t\x00\x00\x00\x01"  # version 131, MAP_EXT with one pair
    assert plain.startswith(prefix), plain
    key, rest = read_atom(plain[len(prefix):])
    assert key == "node", plain
    name, rest = read_atom(rest)
    assert rest == b"", plain
    return name


def read_atom(data):
    """One atom in the external term format (OTP 25 writes ATOM_EXT, OTP 26+ SMALL_ATOM_UTF8_EXT)."""
    if data[0] in (100, 118):  # ATOM_EXT, ATOM_UTF8_EXT: 2-byte length
        size = struct.unpack(">H", data[1:3])[0]
        return data[3:3 + size].decode(), data[3 + size:]
    if data[0] in (115, 119):  # SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT: 1-byte length
        return data[2:2 + data[1]].decode(), data[2 + data[1]:]
    raise AssertionError("not an atom: %r" % data[:8])


def test_gossip_with_secret_meshes_and_keeps_a_wrong_secret_apart(releases, processes, tmp_path):
    """broadcast_only on the loopback broadcast address (127.255.255.255): nothing leaves the host."""
    rel = releases("meshprobe-0.1.0.tar.gz")
    epmd_port = start_epmd(rel, processes, tmp_path)
    gossip_port = free_port(socket.SOCK_DGRAM)
    secret = "right-%s" % suffix()

    def gossip_config(path, the_secret, port=gossip_port):
        return libcluster_config(path, [("gossip", "Cluster.Strategy.Gossip", {
            "port": port, "if_addr": b"0.0.0.0", "multicast_addr": b"127.255.255.255",
            "broadcast_only": True, "secret": the_secret.encode()})])

    good = gossip_config(tmp_path / "good.config", secret)
    bad = gossip_config(tmp_path / "bad.config", "wrong-secret")
    env = {"ERL_EPMD_PORT": str(epmd_port)}
    names = ["gs%s_%s@127.0.0.1" % (letter, suffix()) for letter in "abc"]
    outsider_name = "gsx_%s@127.0.0.1" % suffix()

    # Listen like a libcluster node would, to check meshprobe's packets against the wire format.
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", gossip_port))
    listener.settimeout(1)
    try:
        outsider = start_meshprobe(rel, processes, tmp_path, outsider_name, "-config %s" % bad, env)
        nodes = [start_meshprobe(rel, processes, tmp_path, n, "-config %s" % good, env) for n in names]
        wait_members(nodes, names, timeout=40)

        heard = set()
        deadline = time.monotonic() + 15
        while not set(names) <= heard and time.monotonic() < deadline:
            try:
                packet = listener.recv(2048)
            except socket.timeout:
                continue
            try:
                heard.add(open_gossip_packet(secret.encode(), packet))
            except ValueError:
                pass  # the outsider's packets: another key
        assert set(names) <= heard
    finally:
        listener.close()

    # The outsider (same cookie, wrong secret) has heard several heartbeats by now and joined no one.
    wait_healthy(outsider)
    assert members(outsider) == [outsider_name]
    assert outsider_name not in members(nodes[0])

    # A node that does not gossip itself (its topology listens on another port) is joined by the
    # group as soon as a heartbeat naming it arrives, built here with the libcluster wire format.
    lone_name = "gsl_%s@127.0.0.1" % suffix()
    lone = start_meshprobe(rel, processes, tmp_path, lone_name,
                           "-config %s" % gossip_config(tmp_path / "lone.config", secret, free_port(socket.SOCK_DGRAM)), env)
    wait_healthy(lone)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sender.sendto(gossip_packet(secret.encode(), lone_name), ("127.255.255.255", gossip_port))
    wait_members(nodes + [lone], names + [lone_name], timeout=20)


def test_gossip_redials_a_cut_pair_on_the_next_heartbeat(releases, processes, tmp_path):
    """A heartbeat from a node that is not connected makes the hearer connect to it, and heartbeats go
    out every 1..5000 ms, so a cut pair is joined again within about 5 s (the wait allows 20 s)."""
    rel = releases("meshprobe-0.1.0.tar.gz")
    epmd_port = start_epmd(rel, processes, tmp_path)
    conf = libcluster_config(tmp_path / "gossip.config", [("gossip", "Cluster.Strategy.Gossip", {
        "port": free_port(socket.SOCK_DGRAM), "multicast_addr": b"127.255.255.255", "broadcast_only": True})])
    names = ["gh%s_%s@127.0.0.1" % (letter, suffix()) for letter in "ab"]
    env = {"ERL_EPMD_PORT": str(epmd_port)}
    nodes = [start_meshprobe(rel, processes, tmp_path, n, "-config %s" % conf, env) for n in names]
    wait_members(nodes, names)
    observer = start_observer(processes, tmp_path, env=env)
    connects = strategy_connects(nodes, names, "gossip")

    cut_at = cut_pair(observer, nodes, names)
    wait_members(nodes, names, timeout=20)
    print("gossip: pair connected again %.2f s after the cut" % (time.monotonic() - cut_at))
    assert strategy_connects(nodes, names, "gossip") > connects


@pytest.fixture
def netns():
    """A network namespace of the test's own with only a loopback that carries multicast.

    Request it before `processes` so that the nodes in it are stopped before it is deleted.
    """
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 (ip) to make a network namespace")
    name = "mpt-%s" % suffix()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        # Multicast group membership on {0,0,0,0} (as libcluster joins) needs a route for 224/4.
        subprocess.run(["ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "lo"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_gossip_multicast_with_defaults_meshes_in_a_namespace(releases, netns, processes, tmp_path):
    """Plain multicast heartbeats to the default group 233.252.1.32, no secret. Multicast cannot stay
    on the host's loopback without changing its routes, so this runs in a namespace made here."""
    rel = releases("meshprobe-0.1.0.tar.gz")
    prefix = ["ip", "netns", "exec", netns]
    epmd_port = start_epmd(rel, processes, tmp_path, prefix)
    config = libcluster_config(tmp_path / "multicast.config", [("gossip", "Cluster.Strategy.Gossip", {
        "port": free_port(socket.SOCK_DGRAM)})])
    names = ["mc%s_%s@127.0.0.1" % (letter, suffix()) for letter in "abc"]
    nodes = [start_meshprobe(rel, processes, tmp_path, n, "-config %s" % config, {"ERL_EPMD_PORT": str(epmd_port)},
                             prefix) for n in names]
    # The namespace's loopback is out of this process's reach: read each node's membership log.
    full = "members (3): %s\n" % " ".join(sorted(names))
    for node in nodes:
        wait_for(lambda n=node: full in n.log_text(), 30, "%s to log the full membership" % node.node_name)
    assert "[libcluster:gossip] connected to" in "".join(node.log_text() for node in nodes)


# ---- DNS-based (polling) strategies


class PollingPair:
    """Two meshprobe nodes that find each other with one polling strategy (see `start_polling_pair`)."""

    def __init__(self, nodes, names, dns, dist_port, topology):
        self.nodes = nodes
        self.names = names
        self.dns = dns
        self.dist_port = dist_port
        self.topology = topology


def start_polling_pair(rel, processes, tmp_path, strategy, interval_ms=500, cluster_domain=None):
    """Two meshprobe nodes on 127.0.0.2 and 127.0.0.3 (EPMD-less, one distribution port) that find each
    other with a polling strategy through a test dnsmasq, under the names that strategy dials:
    dnspoll `basename@<ip>` per A record, kubernetes_dns `application_name@<ip>` per A record of the
    headless Service, kubernetes_dnssrv `application_name@<SRV target>` of
    `<service>.<namespace>.svc.<CLUSTER_DOMAIN, default cluster.local.>`."""
    tag = suffix()
    addresses = ("127.0.0.2", "127.0.0.3")
    srv = ()
    if strategy == "dnspoll":
        query, base = "peers-%s.meshprobe.test" % tag, "dp_%s" % tag
        hosts = [(ip, query) for ip in addresses]
        names = ["%s@%s" % (base, ip) for ip in addresses]
        module, config = "Cluster.Strategy.DNSPoll", {"query": query.encode(), "node_basename": base.encode()}
    elif strategy == "kubernetes_dns":
        service, app = "app-headless-%s.default.svc.cluster.local" % tag, "k8sdns_%s" % tag
        hosts = [(ip, service) for ip in addresses]
        names = ["%s@%s" % (app, ip) for ip in addresses]
        module, config = "Cluster.Strategy.Kubernetes.DNS", {"service": service.encode(), "application_name": app.encode()}
    else:
        service, namespace, app = "app-%s" % tag, "beamops", "k8ssrv_%s" % tag
        srv_name = "%s.%s.svc.%s" % (service, namespace, (cluster_domain or "cluster.local.").rstrip("."))
        pods = ["%s-%d.%s" % (service, i, srv_name) for i in range(len(addresses))]
        hosts = list(zip(addresses, pods))
        srv = [(srv_name, pod, 4369) for pod in pods]
        names = ["%s@%s" % (app, pod) for pod in pods]
        module, config = "Cluster.Strategy.Kubernetes.DNSSRV", {
            "service": service.encode(), "namespace": namespace.encode(), "application_name": app.encode()}
    config["polling_interval"] = interval_ms
    dns = start_dnsmasq(processes, tmp_path, hosts, srv=srv)
    conf = libcluster_config(tmp_path / ("%s.config" % strategy), [(strategy, module, config)])
    env = {"ERL_INETRC": str(dns.inetrc)}
    if cluster_domain:
        env["CLUSTER_DOMAIN"] = cluster_domain
    dist_port = free_port()
    nodes = [start_meshprobe(rel, processes, tmp_path, name, epmdless_zflags(conf, ip, dist_port), env)
             for name, ip in zip(names, addresses)]
    return PollingPair(nodes, names, dns, dist_port, strategy)


@pytest.mark.parametrize("strategy, cluster_domain", [("dnspoll", None), ("kubernetes_dns", None),
                                                      ("kubernetes_dnssrv", None), ("kubernetes_dnssrv", "beamops.test.")])
def test_polling_strategies_dial_the_names_their_answers_give(releases, processes, tmp_path, strategy, cluster_domain):
    """Each node is started under the name the strategy forms from the DNS answer for it, so the pair
    meshes only if the stand-in forms libcluster's names (see `start_polling_pair`)."""
    pair = start_polling_pair(releases("meshprobe-0.1.0.tar.gz"), processes, tmp_path, strategy,
                              cluster_domain=cluster_domain)
    wait_members(pair.nodes, pair.names)


def test_dnspoll_prunes_a_node_whose_address_left_the_answer(releases, processes, tmp_path):
    pair = start_polling_pair(releases("meshprobe-0.1.0.tar.gz"), processes, tmp_path, "dnspoll")
    wait_members(pair.nodes, pair.names)

    # Polling strategies disconnect the nodes they connected whose address left the answer. A node
    # only prunes what one of its own polls recorded, so let a poll run after the mesh formed.
    time.sleep(1.5)
    pair.dns.hosts_file.write_text(pair.dns.hosts_file.read_text().splitlines()[0] + "\n")
    pair.dns.reload()
    wait_for(lambda: members(pair.nodes[0]) == pair.names[:1], 20, "the node at 127.0.0.3 to be dropped")
    assert '[libcluster:dnspoll] disconnected from :"%s"' % pair.names[1] in pair.nodes[0].log_text()


@pytest.mark.parametrize("strategy", ["dnspoll", "kubernetes_dns", "kubernetes_dnssrv"])
def test_polling_strategy_redials_a_cut_pair_at_the_next_poll(releases, processes, tmp_path, strategy):
    """libcluster 3.5's polling strategies connect every node of each answer, every round, not only the
    nodes new to it. So two nodes whose connection is lost while DNS still lists both are connected
    again by the next poll (1 s here); the wait allows ten intervals for a loaded machine."""
    pair = start_polling_pair(releases("meshprobe-0.1.0.tar.gz"), processes, tmp_path, strategy, interval_ms=1000)
    wait_members(pair.nodes, pair.names)
    # Let each side poll at least once with the peer connected, so that the peer is in its previous
    # answer: a loop that dials only new names would never dial it again.
    time.sleep(2.5)
    # The observer resolves the peers' names (SRV targets) through the same dnsmasq.
    observer = start_observer(processes, tmp_path, host="127.0.0.9", dist_port=pair.dist_port,
                              env={"ERL_INETRC": str(pair.dns.inetrc)})
    connects = strategy_connects(pair.nodes, pair.names, strategy)

    cut_at = cut_pair(observer, pair.nodes, pair.names)
    wait_members(pair.nodes, pair.names, timeout=10)
    print("%s: pair connected again %.2f s after the cut (polling_interval 1 s)" % (strategy, time.monotonic() - cut_at))
    assert strategy_connects(pair.nodes, pair.names, strategy) > connects


# ---- a real partition between two network namespaces


class NetnsPair:
    """Two network namespaces joined by one veth link (see the `netns_pair` fixture)."""

    def __init__(self, names, links, addresses):
        self.names = names
        self.links = links
        self.addresses = addresses

    def prefix(self, index):
        return ["ip", "netns", "exec", self.names[index]]

    def cut(self, index):
        """Drop every packet in and out of namespace `index`'s link (nft), both directions."""
        rules = ('table inet mpt_partition {\n'
                 ' chain input { type filter hook input priority 0; policy accept; iifname "%s" drop; }\n'
                 ' chain output { type filter hook output priority 0; policy accept; oifname "%s" drop; }\n'
                 '}\n') % (self.links[index], self.links[index])
        subprocess.run(self.prefix(index) + ["nft", "-f", "-"], input=rules, text=True, check=True)

    def heal(self, index):
        subprocess.run(self.prefix(index) + ["nft", "delete", "table", "inet", "mpt_partition"], check=True)


@pytest.fixture
def netns_pair():
    """Two network namespaces of the test's own (mpt-<id>-a, mpt-<id>-b), each with its loopback up,
    joined by a veth link: 198.18.50.1/24 in the first, 198.18.50.2/24 in the second.

    Request it before `processes` so that the nodes in them are stopped before they are deleted.
    """
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")):
        pytest.skip("needs root, iproute2 (ip) and nftables (nft) to make and cut network namespaces")
    tag = suffix()
    pair = NetnsPair(["mpt-%s-a" % tag, "mpt-%s-b" % tag], ["mpta%s" % tag, "mptb%s" % tag],
                     ["198.18.50.1", "198.18.50.2"])
    made = []
    try:
        for name in pair.names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "link", "add", pair.links[0], "netns", pair.names[0], "type", "veth",
                        "peer", "name", pair.links[1], "netns", pair.names[1]], check=True)
        for name, link, address in zip(pair.names, pair.links, pair.addresses):
            subprocess.run(["ip", "-n", name, "addr", "add", address + "/24", "dev", link], check=True)
            subprocess.run(["ip", "-n", name, "link", "set", link, "up"], check=True)
        yield pair
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.parametrize("strategy", ["dnspoll", "epmd", "erlang_hosts", "gossip"])
def test_partition_between_namespaces_heals_by_itself(releases, netns_pair, processes, tmp_path, strategy):
    """Two meshprobe nodes in two namespaces; every packet on the link is dropped (nft, both directions)
    until both sides have seen the nodedown (net_ticktime 4) and two more seconds have passed without
    a reconnect, then let through again. Each VM strategy,
    as configured to heal (polling 1 s, Epmd/ErlangHosts `timeout` 1 s, Gossip's heartbeats), meshes
    the pair again by itself. The figures are printed; the wait allows 30 s (a redial that started
    during the partition can hold a round for up to net_setuptime, 7 s)."""
    rel = releases("meshprobe-0.1.0.tar.gz")
    tag = suffix()
    names = ["mp_%s@%s" % (tag, address) for address in netns_pair.addresses]
    epmd_port = free_port()
    for index, address in enumerate(netns_pair.addresses):
        start_epmd(rel, processes, tmp_path, netns_pair.prefix(index), address=address, port=epmd_port)
    env = {"ERL_EPMD_PORT": str(epmd_port)}
    if strategy == "dnspoll":
        query = "peers-%s.meshprobe.test" % tag
        dns_port = free_port_tcp_and_udp()
        for index in range(2):
            dns = start_dnsmasq(processes, tmp_path, [(address, query) for address in netns_pair.addresses],
                                prefix=netns_pair.prefix(index), port=dns_port, name="dns-%d" % index)
        env["ERL_INETRC"] = str(dns.inetrc)
        module, config = "DNSPoll", {"query": query.encode(), "node_basename": ("mp_%s" % tag).encode(),
                                     "polling_interval": 1000}
    elif strategy == "epmd":
        module, config = "Epmd", {"hosts": [Atom(n) for n in names], "timeout": 1000}
    elif strategy == "erlang_hosts":
        home = tmp_path / "home"
        home.mkdir()
        (home / ".hosts.erlang").write_text("".join("'%s'.\n" % address for address in netns_pair.addresses))
        env["HOME"] = str(home)
        module, config = "ErlangHosts", {"timeout": 1000}
    else:
        module, config = "Gossip", {"port": free_port(socket.SOCK_DGRAM), "multicast_addr": b"198.18.50.255",
                                    "broadcast_only": True}
    conf = libcluster_config(tmp_path / "partition.config", [(strategy, "Cluster.Strategy." + module, config)],
                             extra={"kernel": {"net_ticktime": 4}})
    nodes = [start_meshprobe(rel, processes, tmp_path, name, "-config %s" % conf, env, netns_pair.prefix(index))
             for index, name in enumerate(names)]
    # The namespaces are out of this process's reach: read each node's membership log.
    full = "members (2): %s\n" % " ".join(sorted(names))
    for node in nodes:
        wait_for(lambda n=node: full in n.log_text(), 40,
                 lambda n=node: "%s to log the full membership:\n%s" % (n.node_name, n.log_text()))
    time.sleep(2.5)  # each side polls/redials at least once with the peer connected

    def seen(kind):
        # "membership: nodedown NAME (reason); ..." and "membership: nodeup NAME; ..."
        return [log_count(node, "membership: %s %s%s" % (kind, other, " (" if kind == "nodedown" else ";"))
                for node, other in zip(nodes, names[::-1])]

    downs = seen("nodedown")
    netns_pair.cut(0)
    cut_at = time.monotonic()
    try:
        wait_for(lambda: all(now > before for now, before in zip(seen("nodedown"), downs)), 20,
                 "both sides to see the nodedown")
        detected = time.monotonic() - cut_at
        ups = seen("nodeup")
        time.sleep(2)  # a few redial rounds: none gets through while the rules are in place
        assert seen("nodeup") == ups, "the pair met again during the partition"
    finally:
        netns_pair.heal(0)
    healed_at = time.monotonic()
    wait_for(lambda: all(now > before for now, before in zip(seen("nodeup"), ups)), 30,
             lambda: "the pair to mesh again after the partition (logs:\n%s)" % "\n".join(n.log_text() for n in nodes))
    print("%s: nodedown seen %.1f s after the cut; meshed again %.1f s after the rules were lifted"
          % (strategy, detected, time.monotonic() - healed_at))


# ---------------------------------------------------------------------------------------------
# erlprobe


def test_erlprobe_native_discovery_forms_a_mesh(releases, processes, tmp_path):
    """Two nodes get their peers from a replaced sys.config (RELX_CONFIG_PATH), the third from an
    extra -config in ERL_ZFLAGS; the kernel's sync_nodes_optional plus erlprobe's connects mesh them."""
    rel = releases("erlprobe-0.1.0.tar.gz")
    epmd_port = start_epmd(rel, processes, tmp_path)
    names = ["ep%s_%s@127.0.0.1" % (letter, suffix()) for letter in "abc"]
    nodes = []
    for i, name in enumerate(names):
        http_port = free_port()
        others = [Atom(n) for n in names if n != name]
        conf = erl_term([
            (Atom("kernel"), [(Atom("sync_nodes_optional"), others), (Atom("sync_nodes_timeout"), 2000)]),
            (Atom("erlprobe"), [(Atom("peers"), [Atom(n) for n in names]), (Atom("connect_interval"), 1000),
                                (Atom("http_port"), http_port), (Atom("http_ip"), (127, 0, 0, 1))]),
        ]) + ".\n"
        vm_args = tmp_path / ("vm-%d.args" % i)
        vm_args.write_text("-name %s\n" % name)
        config = tmp_path / ("node-%d.config" % i)
        config.write_text(conf)
        env = {"ERL_EPMD_PORT": str(epmd_port), "VMARGS_PATH": str(vm_args)}
        if i < 2:
            env["RELX_CONFIG_PATH"] = str(config)
        else:
            env["ERL_ZFLAGS"] = "-config %s" % config
        node = Node(rel, name, env, tmp_path, "foreground")
        node.http_port = http_port
        processes.append(node)
        nodes.append(node)
    wait_members(nodes, names, timeout=40)
    for node in nodes:
        assert http_get(node.http_port, "/ready") == (200, "peers 2 expected 2\n")
        assert http_get(node.http_port, "/health") == (200, "ok 0.1.0\n")
    # Each node logged the full membership: at start (the kernel's sync_nodes_optional holds the
    # boot until the listed peers are up) or when the last peer came up.
    for node in nodes:
        assert "members (3): %s\n" % " ".join(sorted(names)) in node.log_text()


def test_erlprobe_broken_version_fails_its_health_check(releases, processes, tmp_path):
    rel = releases("erlprobe-0.3.0-broken.tar.gz")
    epmd_port = start_epmd(rel, processes, tmp_path)
    http_port = free_port()
    config = tmp_path / "broken.config"
    config.write_text("[{erlprobe, [{http_port, %d}, {http_ip, {127,0,0,1}}]}].\n" % http_port)
    vm_args = tmp_path / "vm.args"
    vm_args.write_text("-name epbroken_%s@127.0.0.1\n" % suffix())
    node = Node(rel, "epbroken", {"ERL_EPMD_PORT": str(epmd_port), "VMARGS_PATH": str(vm_args),
                                  "RELX_CONFIG_PATH": str(config)}, tmp_path, "foreground")
    processes.append(node)
    wait_for(lambda: http_get(http_port, "/health")[0] is not None, 30, "erlprobe http")
    assert http_get(http_port, "/health") == (500, "broken 0.3.0-broken\n")
