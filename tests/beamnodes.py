"""Real BEAM nodes on loopback for the distribution tests (OTP 25 and OTP 28).

Each node runs `erl -noshell` with a small read-eval-print loop on its standard input, so the tests
can ask a node for `nodes()` or make it connect to another node WITHOUT using the distribution
themselves (no erl_call, no extra hidden node, nothing that could disturb what is being verified).

    nodes = start_nodes([NodeSpec("a", release="25"), NodeSpec("b", release="28")])
    nodes[0].connect(nodes[1])          # net_kernel:connect_node on a
    nodes[0].visible()                  # sorted erlang:nodes() of a
    stop_nodes(nodes)                   # kills each node by its PID

Nodes start in parallel; names carry a random suffix so parallel test runs never collide.
"""
import os
import select
import shutil
import subprocess
import threading
import time
import uuid

import otp

READY = "@@READY"
REPLY = "@@R "

# The loop evaluates one expression per line and prints the value on one line (binaries as text).
REPL = (
    "Loop = fun Loop() -> "
    "  case io:get_line('') of "
    "    eof -> erlang:halt(0); "
    "    Line -> "
    "      Out = try "
    "        {ok, Toks, _} = erl_scan:string(Line), "
    "        {ok, Exprs} = erl_parse:parse_exprs(Toks), "
    "        {value, V, _} = erl_eval:exprs(Exprs, []), "
    "        if is_binary(V) -> V; true -> iolist_to_binary(io_lib:format(\"~0tp\", [V])) end "
    "      catch C:E -> iolist_to_binary(io_lib:format(\"error ~0tp\", [{C, E}])) end, "
    "      io:format(\"@@R ~ts~n\", [binary:replace(Out, <<\"\\n\">>, <<\" \">>, [global])]), "
    "      Loop() "
    "  end "
    "end, "
    "io:format(\"@@READY~n\"), Loop()."
)


class NodeSpec:
    """How to start one node.

    name: the alive part (a random suffix is added unless exact=True); host: the host part;
    short: start with -sname instead of -name; tls: a dict with certfile/keyfile/cacertfile and
    verify_client (bool); dist_port: EPMD-less node listening on that port; args: more erl arguments;
    env: more environment variables (e.g. ERL_EPMD_PORT).
    """

    def __init__(self, name, release="25", host=None, short=False, cookie="beamops-test-cookie", tls=None,
                 dist_port=None, args=(), exact=False, env=None):
        self.alive = name if exact else "%s_%s" % (name, uuid.uuid4().hex[:8])
        self.release = release
        self.short = short
        self.host = host or ("localhost" if short else "127.0.0.1")
        self.cookie = cookie
        self.tls = tls
        self.dist_port = dist_port
        self.args = list(args)
        self.env = dict(env or {})

    @property
    def node(self):
        return "%s@%s" % (self.alive, self.host)


class BeamNode:
    def __init__(self, spec, workdir):
        self.spec = spec
        self.name = spec.node
        self.release = spec.release
        self.cookie = spec.cookie
        self.workdir = workdir
        self._lock = threading.Lock()
        self._buffer = b""
        self.proc = None
        self.log = []

    def command(self):
        erl = otp.runtimes()[self.release]
        cmd = [erl, "-noshell", "-sname" if self.spec.short else "-name", self.name, "-setcookie", self.cookie,
               "-kernel", "net_ticktime", "60"]
        if self.spec.tls:
            optfile = os.path.join(self.workdir, "%s.ssl_dist.conf" % self.spec.alive)
            with open(optfile, "w") as handle:
                handle.write(ssl_dist_optfile(**self.spec.tls))
            cmd += ["-proto_dist", "inet_tls", "-ssl_dist_optfile", optfile]
        if self.spec.dist_port:
            cmd += ["-start_epmd", "false", "-erl_epmd_port", str(self.spec.dist_port)]
        cmd += self.spec.args
        cmd += ["-eval", REPL]
        return cmd

    def start(self):
        env = dict(os.environ)
        env["HOME"] = self.workdir  # keeps ~/.erlang.cookie of the machine out of it
        if self.spec.dist_port:
            # No EPMD to register with: an EPMD-less node must be reachable through its fixed port alone.
            env["ERL_EPMD_PORT"] = str(free_port())
        env.update(self.spec.env)
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.workdir)

    def _read_line(self, deadline):
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("node %s did not answer; output so far: %r" % (self.name, self.log[-5:]))
            ready = select.select([self.proc.stdout], [], [], left)[0]
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError("node %s exited (%s); output: %s"
                                       % (self.name, self.proc.poll(), "\n".join(self.log[-20:])))
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode("utf-8", "replace")
        self.log.append(text)
        return text

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while self._read_line(deadline).strip() != READY:
            pass

    def eval(self, expr, timeout=15):
        """Evaluate an Erlang expression (with or without the final dot) on the node; returns its printed value."""
        expr = expr.strip()
        if not expr.endswith("."):
            expr += "."
        with self._lock:
            self.proc.stdin.write(expr.replace("\n", " ").encode("utf-8") + b"\n")
            self.proc.stdin.flush()
            deadline = time.monotonic() + timeout
            while True:
                line = self._read_line(deadline)
                if line.startswith(REPLY):
                    out = line[len(REPLY):]
                    if out.startswith("error {"):
                        raise RuntimeError("%s failed on %s: %s" % (expr, self.name, out))
                    return out

    def _names(self, expr):
        out = self.eval("list_to_binary(lists:join(\" \", [atom_to_list(N) || N <- lists:sort(%s)]))" % expr)
        return out.split()

    def visible(self):
        """Sorted erlang:nodes() of this node."""
        return self._names("erlang:nodes()")

    def hidden(self):
        """Sorted erlang:nodes(hidden) of this node."""
        return self._names("erlang:nodes(hidden)")

    def connect(self, other):
        other_name = other.name if isinstance(other, BeamNode) else other
        out = self.eval("net_kernel:connect_node('%s')" % other_name, timeout=20)
        if out != "true":
            raise RuntimeError("%s could not connect to %s: %s" % (self.name, other_name, out))

    def disconnect(self, other):
        other_name = other.name if isinstance(other, BeamNode) else other
        self.eval("erlang:disconnect_node('%s')" % other_name)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # by PID: this Popen's own process
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout) if self.proc else ():
            try:
                stream.close()
            except OSError:
                pass


def start_nodes(specs, workdir, timeout=40):
    """Start every node of ``specs`` at once and wait until each answers; returns BeamNodes in order."""
    nodes = [BeamNode(spec, workdir) for spec in specs]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready(timeout)
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def stop_nodes(nodes):
    for node in nodes:
        node.stop()


def wait_until(predicate, timeout=15, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %s s" % timeout)
        time.sleep(interval)


def connect_mesh(nodes):
    """Make ``nodes`` one full mesh (each connects to the next; connect_all closes the mesh) and wait for it."""
    for left, right in zip(nodes, nodes[1:]):
        left.connect(right)
    names = sorted(n.name for n in nodes)
    for node in nodes:
        wait_until(lambda node=node: sorted(node.visible() + [node.name]) == names)


def ssl_dist_optfile(certfile, keyfile, cacertfile, verify_client=False):
    """Text of an -ssl_dist_optfile: the node verifies peers against the CA; optionally demands client certs."""
    server = ['{certfile, "%s"}' % certfile, '{keyfile, "%s"}' % keyfile, '{cacertfile, "%s"}' % cacertfile,
              "{secure_renegotiate, true}"]
    if verify_client:
        server += ["{verify, verify_peer}", "{fail_if_no_peer_cert, true}"]
    client = ['{certfile, "%s"}' % certfile, '{keyfile, "%s"}' % keyfile, '{cacertfile, "%s"}' % cacertfile,
              "{verify, verify_peer}", "{secure_renegotiate, true}"]
    return "[{server, [%s]}, {client, [%s]}].\n" % (", ".join(server), ", ".join(client))


def make_test_pki(directory, servers=None):
    """A CA, server certificates, a client certificate and an unrelated CA, made with the openssl CLI.

    servers: {label: [host names or addresses]}, one certificate per label (default: "server" for localhost,
    127.0.0.1 and ::1). OTP checks the host of a node name as a DNS name even when it is an address, and Python
    checks an address as an IP name, so an IPv4 address is listed both ways.
    Returns a dict of file paths: ca, ca_key, other_ca, other_ca_key, client_cert, client_key, other_client_cert,
    other_client_key (a client certificate from the unrelated CA), and <label>_cert, <label>_key per server.
    """
    openssl = shutil.which("openssl")
    if not openssl:
        raise RuntimeError("the openssl command is needed to make test certificates")
    servers = servers or {"server": ["localhost", "127.0.0.1", "::1"]}

    def run(*args):
        subprocess.run([openssl] + list(args), check=True, cwd=directory, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    paths = dict((key, os.path.join(directory, key + ".pem")) for key in ("ca", "ca_key", "other_ca", "other_ca_key"))
    for ca, key, subject in (("ca", "ca_key", "/CN=beamops test CA"), ("other_ca", "other_ca_key", "/CN=unrelated CA")):
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", subject, "-keyout", paths[key], "-out", paths[ca])
    leaves = [(label, names, "ca") for label, names in sorted(servers.items())]
    leaves += [("client", None, "ca"), ("other_client", None, "other_ca")]
    for label, names, issuer in leaves:
        cert = paths[label + "_cert"] = os.path.join(directory, label + "_cert.pem")
        key = paths[label + "_key"] = os.path.join(directory, label + "_key.pem")
        csr = os.path.join(directory, label + ".csr")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=beamops " + label,
            "-keyout", key, "-out", csr)
        extra = []
        if names:
            ext = os.path.join(directory, label + ".ext")
            alt = ["DNS:" + name for name in names if ":" not in name]
            alt += ["IP:" + name for name in names if ":" in name or name.replace(".", "").isdigit()]
            with open(ext, "w") as handle:
                handle.write("subjectAltName=%s\n" % ",".join(alt))
            extra = ["-extfile", ext]
        run("x509", "-req", "-in", csr, "-CA", paths[issuer], "-CAkey", paths[issuer + "_key"], "-CAcreateserial", "-days", "2",
            "-out", cert, *extra)
    for path in paths.values():
        os.chmod(path, 0o600)
    return paths


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SilentListener:
    """A real TCP listener on 127.0.0.1 that accepts connections and never says anything (a hung peer)."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()
