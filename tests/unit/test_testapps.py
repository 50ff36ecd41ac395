"""The test releases, built by scripts/build-testapps.sh and run for real on loopback.

meshprobe (Elixir) forms its cluster from the application env `:libcluster, :topologies` given in an
extra `-config` file through ERL_ZFLAGS, as a deployment does; erlprobe (Erlang) clusters with the
kernel's own means. Every node is a real BEAM started by the release's own start script; DNS-based
strategies ask a real dnsmasq bound to 127.0.0.1. Everything stays on 127.0.0.0/8, and every process
the tests start is stopped by its PID.
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
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
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


def start_epmd(release, processes, tmp_path, prefix=()):
    """A private EPMD on a random port of 127.0.0.1 (the system one is shared with others)."""
    port = free_port()
    epmd = Process(list(prefix) + [str(next(release.root.glob("erts-*/bin/epmd"))), "-port", str(port),
                                   "-address", "127.0.0.1"], tmp_path / "epmd.log")
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
                 "%s to see exactly %s (log:\n%s)" % (node.node_name, expected, node.log_text()))


class DnsServer:
    """A running test dnsmasq: its process, the hosts file it answers from, the inetrc that points a BEAM at it."""

    def __init__(self, process, hosts_file, inetrc):
        self.process = process
        self.hosts_file = hosts_file
        self.inetrc = inetrc

    def reload(self):
        self.process.proc.send_signal(signal.SIGHUP)  # dnsmasq re-reads its hosts files


def start_dnsmasq(processes, tmp_path, hosts, srv=()):
    """dnsmasq answering only from `hosts` (lines "ip name") and SRV records, on 127.0.0.1:<random>."""
    port = free_port_tcp_and_udp()
    hosts_file = tmp_path / "dns-hosts"
    hosts_file.write_text("".join("%s %s\n" % pair for pair in hosts))
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
            "--bind-interfaces", "--listen-address=127.0.0.1", "--port=%d" % port, "--addn-hosts=%s" % hosts_file,
            "--local-ttl=1", "--pid-file=", "--user=root"]
    argv += ["--srv-host=%s,%s,%d,10,50" % record for record in srv]
    dnsmasq = Process(argv, tmp_path / "dnsmasq.log")
    processes.append(dnsmasq)
    # inet_res options for the BEAM: only this server, no resolv.conf or hosts file (order matters:
    # `resolv_conf ""` clears the nameservers listed before it).
    inetrc = tmp_path / "inetrc"
    inetrc.write_text('{resolv_conf, ""}.\n{hosts_file, ""}.\n{nameserver, {127,0,0,1}, %d}.\n{lookup, [dns]}.\n' % port)

    def answering():
        if dnsmasq.proc.poll() is not None:
            raise AssertionError("dnsmasq exited: %s" % dnsmasq.log.read_text())
        return dns_query_a(port, "localhost.invalid") is not None

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


@pytest.fixture
def netns():
    """A network namespace of the test's own with only a loopback that carries multicast.

    Request it before `processes` so that the nodes in it are stopped before it is deleted.
    """
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 (ip) to make a network namespace")
    name = "mptest-%s" % suffix()
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


# ---- DNS-based strategies


def test_dnspoll_connects_basename_at_each_address_and_prunes(releases, processes, tmp_path):
    rel = releases("meshprobe-0.1.0.tar.gz")
    query = "peers-%s.meshprobe.test" % suffix()
    dns = start_dnsmasq(processes, tmp_path, [("127.0.0.2", query), ("127.0.0.3", query)])
    basename = "dp_%s" % suffix()
    dist_port = free_port()
    config = libcluster_config(tmp_path / "dnspoll.config", [("dns", "Cluster.Strategy.DNSPoll", {
        "query": query.encode(), "node_basename": basename.encode(), "polling_interval": 500})])
    nodes = []
    for ip in ("127.0.0.2", "127.0.0.3"):
        nodes.append(start_meshprobe(rel, processes, tmp_path, "%s@%s" % (basename, ip),
                                     epmdless_zflags(config, ip, dist_port), {"ERL_INETRC": str(dns.inetrc)}))
    both = ["%s@127.0.0.2" % basename, "%s@127.0.0.3" % basename]
    wait_members(nodes, both)

    # Polling strategies disconnect the nodes they connected whose address left the answer. A node
    # only prunes what one of its own polls recorded, so let a poll run after the mesh formed.
    time.sleep(1.5)
    dns.hosts_file.write_text("127.0.0.2 %s\n" % query)
    dns.reload()
    wait_for(lambda: members(nodes[0]) == both[:1], 20, "the node at 127.0.0.3 to be dropped")
    assert "[libcluster:dns] disconnected from :\"%s\"" % both[1] in nodes[0].log_text()


def test_kubernetes_dns_dials_application_name_at_each_a_record(releases, processes, tmp_path):
    rel = releases("meshprobe-0.1.0.tar.gz")
    service = "app-headless-%s.default.svc.cluster.local" % suffix()
    inetrc = start_dnsmasq(processes, tmp_path, [("127.0.0.2", service), ("127.0.0.3", service)]).inetrc
    app = "k8sdns_%s" % suffix()
    dist_port = free_port()
    config = libcluster_config(tmp_path / "k8sdns.config", [("k8s", "Cluster.Strategy.Kubernetes.DNS", {
        "service": service.encode(), "application_name": app.encode(), "polling_interval": 500})])
    nodes = [start_meshprobe(rel, processes, tmp_path, "%s@%s" % (app, ip), epmdless_zflags(config, ip, dist_port),
                             {"ERL_INETRC": str(inetrc)}) for ip in ("127.0.0.2", "127.0.0.3")]
    wait_members(nodes, ["%s@127.0.0.2" % app, "%s@127.0.0.3" % app])


@pytest.mark.parametrize("cluster_domain", [None, "beamops.test."])
def test_kubernetes_dnssrv_dials_application_name_at_each_srv_target(releases, processes, tmp_path, cluster_domain):
    """The SRV name asked is <service>.<namespace>.svc.<CLUSTER_DOMAIN, default cluster.local.>."""
    rel = releases("meshprobe-0.1.0.tar.gz")
    service, namespace = "app-%s" % suffix(), "beamops"
    srv_name = "%s.%s.svc.%s" % (service, namespace, (cluster_domain or "cluster.local.").rstrip("."))
    pods = ["%s-%d.%s" % (service, i, srv_name) for i in (0, 1)]
    srv_records = [(srv_name, pods[0], 4369), (srv_name, pods[1], 4369)]
    inetrc = start_dnsmasq(processes, tmp_path, [("127.0.0.2", pods[0]), ("127.0.0.3", pods[1])], srv=srv_records).inetrc
    app = "k8ssrv_%s" % suffix()
    dist_port = free_port()
    config = libcluster_config(tmp_path / "k8ssrv.config", [("k8s", "Cluster.Strategy.Kubernetes.DNSSRV", {
        "service": service.encode(), "namespace": namespace.encode(), "application_name": app.encode(),
        "polling_interval": 500})])
    env = {"ERL_INETRC": str(inetrc)}
    if cluster_domain:
        env["CLUSTER_DOMAIN"] = cluster_domain
    names = ["%s@%s" % (app, pod) for pod in pods]
    nodes = [start_meshprobe(rel, processes, tmp_path, name, epmdless_zflags(config, ip, dist_port), env)
             for name, ip in zip(names, ("127.0.0.2", "127.0.0.3"))]
    wait_members(nodes, names)


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
