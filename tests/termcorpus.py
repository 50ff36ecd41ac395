"""Corpus for the External Term Format tests and fuzzing: a real `erl` driven over pipes, random terms, mutations.

TermNode runs one non-distributed `erl -noinput` whose -eval program (interpreted by erl_eval, so it also runs
on the compiler-less OTP 28 runtime) serves length-prefixed requests on two inherited pipe file descriptors:

    op 1  <<1, Chunk(First), Chunk(Other)...>>: T = binary_to_term(First); answers T re-encoded by the node
          (default, [compressed], {minor_version,0}, {minor_version,1}, {minor_version,2}) and, per Other,
          1 if binary_to_term(Other) =:= T, 0 if not, 2 if the node refuses Other.
    op 2  <<2, ErlangExpressionsUtf8>>: evaluates them and answers the value's encodings as for op 1.

A Chunk is <<Size:32, Bytes>>. Answers are <<0, Chunks>> or <<1, ErrorText>>.
"""
import os
import select
import subprocess
import tempfile

from ansible_collections.beamops.cluster.plugins.module_utils.erl_term import (
    Atom, BitBinary, ErlMap, Export, ImproperList, Pid, Port, Reference, encode)

ENCODINGS = ("default", "compressed", "minor0", "minor1", "minor2")

NODE_PROGRAM = r"""
P = open_port({fd, %(rfd)d, %(wfd)d}, [{packet, 4}, binary, eof]),
Split = fun Split(<<>>) -> []; Split(<<L:32, B:L/binary, R/binary>>) -> [B | Split(R)] end,
Join = fun(Bins) -> [<<(byte_size(B)):32, B/binary>> || B <- Bins] end,
Same = fun(T, B) -> try binary_to_term(B) =:= T of true -> 1; false -> 0 catch _:_ -> 2 end end,
Encodings = fun(T) -> [term_to_binary(T), term_to_binary(T, [compressed]), term_to_binary(T, [{minor_version, 0}]),
                       term_to_binary(T, [{minor_version, 1}]), term_to_binary(T, [{minor_version, 2}])] end,
Handle = fun(<<1, Rest/binary>>) ->
                 [First | Others] = Split(Rest),
                 T = binary_to_term(First),
                 [0, Join(Encodings(T) ++ [list_to_binary([Same(T, B) || B <- Others])])];
            (<<2, Text/binary>>) ->
                 {ok, Tokens, _} = erl_scan:string(unicode:characters_to_list(Text)),
                 {ok, Exprs} = erl_parse:parse_exprs(Tokens),
                 {value, V, _} = erl_eval:exprs(Exprs, []),
                 [0, Join(Encodings(V))]
         end,
Loop = fun Loop() ->
           receive
               {P, {data, Request}} ->
                   Reply = try Handle(Request)
                           catch C:R -> [1, unicode:characters_to_binary(io_lib:format("~0tp:~0tp", [C, R]))] end,
                   port_command(P, Reply),
                   Loop();
               {P, eof} -> erlang:halt(0)
           end
       end,
Loop().
"""


class NodeError(Exception):
    """The node refused a request (binary_to_term badarg, a failing expression...)."""


class TermNode:
    """One long-running `erl` that re-encodes and compares terms for the tests (see the module doc)."""

    def __init__(self, erl, timeout=30.0):
        self.timeout = timeout
        to_node_read, self._to_node = os.pipe()
        self._from_node, from_node_write = os.pipe()
        self._log = tempfile.TemporaryFile()
        program = NODE_PROGRAM % {"rfd": to_node_read, "wfd": from_node_write}
        # Lives as long as this object; close() ends it. No erl_crash.dump in the working directory if it dies.
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [erl, "-noinput", "-eval", program], stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            pass_fds=(to_node_read, from_node_write), env=dict(os.environ, ERL_CRASH_DUMP_SECONDS="0"))
        os.close(to_node_read)
        os.close(from_node_write)

    def _log_text(self):
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-2000:]

    def _read_exact(self, size):
        chunks = []
        while size:
            ready, dummy, dummy = select.select([self._from_node], [], [], self.timeout)
            if not ready:
                raise NodeError("no answer from erl within %.0f s; log: %s" % (self.timeout, self._log_text()))
            chunk = os.read(self._from_node, min(size, 1 << 20))
            if not chunk:
                raise NodeError("erl closed its pipe; log: %s" % self._log_text())
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def request(self, payload):
        """Send one request, return the answer's chunks."""
        message = len(payload).to_bytes(4, "big") + payload
        while message:
            written = os.write(self._to_node, message)
            message = message[written:]
        answer = self._read_exact(int.from_bytes(self._read_exact(4), "big"))
        if answer[:1] != b"\0":
            raise NodeError(answer[1:].decode("utf-8", "replace"))
        chunks, pos = [], 1
        while pos < len(answer):
            size = int.from_bytes(answer[pos:pos + 4], "big")
            chunks.append(answer[pos + 4:pos + 4 + size])
            pos += 4 + size
        return chunks

    def roundtrip(self, first, others=()):
        """binary_to_term(first) re-encoded by the node ({name: bytes}) and, per other, 1/0/2 (see module doc)."""
        payload = b"".join(len(b).to_bytes(4, "big") + b for b in (first,) + tuple(others))
        chunks = self.request(b"\1" + payload)
        return dict(zip(ENCODINGS, chunks)), list(chunks[len(ENCODINGS)])

    def evaluate(self, expressions):
        """The value of Erlang expressions (text ending with '.'), encoded by the node ({name: bytes})."""
        return dict(zip(ENCODINGS, self.request(b"\2" + expressions.encode("utf-8"))))

    def close(self):
        os.close(self._to_node)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._from_node)
        self._log.close()


# Node-produced terms that Python cannot make up: pids, references, ports, closures, exports.
NODE_EXPRESSIONS = {
    "pid": "self().",
    "spawned_pid": "spawn(fun() -> ok end).",
    "reference": "make_ref().",
    "alias": "alias().",
    "monitor": "erlang:monitor(process, self()).",
    "port": "hd(erlang:ports()).",
    "export": "fun erlang:node/0.",
    "closure": "X = 42, Y = <<\"free\">>, Z = #{k => [1.5, {a, \"s\"}]}, fun(A) -> {X, Y, Z, A} end.",
    "nested_closure": "F = fun(A) -> A + 1 end, fun(B) -> F(B) * 2 end.",
    "mixed": "{self(), make_ref(), [1 | 2], <<1:1>>, #{[1] => 2, 1 => 1.0, 1.0 => 1}, 'é', '🐝', -1 bsl 2100, 2.5e-300}.",
}


def random_atom(rng):
    alphabet = "abcxyz_@.0é€🐝"
    return Atom("".join(rng.choice(alphabet) for dummy in range(rng.randint(0, 12))))


def random_leaf(rng):
    choice = rng.randint(0, 13)
    if choice == 0:
        return rng.randint(0, 255)
    if choice == 1:
        return rng.randint(-(1 << 31), (1 << 31) - 1)
    if choice == 2:
        return rng.choice((1, -1)) * rng.getrandbits(rng.choice((33, 64, 200, 2100)))
    if choice == 3:
        return rng.uniform(-1e300, 1e300)
    if choice == 4:
        return random_atom(rng)
    if choice == 5:
        return bytes(rng.getrandbits(8) for dummy in range(rng.randint(0, 20)))
    if choice == 6:
        bits = rng.randint(1, 7)
        data = bytes(rng.getrandbits(8) for dummy in range(rng.randint(1, 5)))
        return BitBinary(data[:-1] + bytes((data[-1] & (0xFF << (8 - bits)) & 0xFF,)), bits)
    if choice == 7:
        return Pid(random_atom(rng), rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32))
    if choice == 8:
        return Reference(random_atom(rng), rng.getrandbits(32), tuple(rng.getrandbits(32) for dummy in range(rng.randint(1, 5))))
    if choice == 9:
        return Port(random_atom(rng), rng.getrandbits(64), rng.getrandbits(32))
    if choice == 10:
        return Export(random_atom(rng), random_atom(rng), rng.randint(0, 255))
    if choice == 11:
        return [rng.randint(0, 255) for dummy in range(rng.randint(1, 30))]
    if choice == 12:
        return rng.choice((True, False, []))
    return Atom("ok")


def random_term(rng, depth=4):
    """A random term in the form decode() returns, nested up to depth."""
    if depth <= 0 or rng.random() < 0.35:
        return random_leaf(rng)
    kind = rng.randint(0, 4)
    children = [random_term(rng, depth - 1) for dummy in range(rng.randint(0, 6))]
    if kind == 0:
        return tuple(children)
    if kind == 1:
        return children
    if kind == 2:
        tail = random_leaf(rng)
        while isinstance(tail, list):
            tail = random_leaf(rng)
        return ImproperList(tuple(children) or (1,), tail)
    if kind == 3:
        return {rng.randint(0, 1000): child for child in children}
    if not children:
        return {}
    return ErlMap([([index], child) for index, child in enumerate(children)])


_INTERESTING_BYTES = (0, 1, 0x7F, 0x80, 0xFF, 70, 77, 80, 82, 88, 90, 97, 98, 99, 100, 104, 105, 106, 107, 108, 109,
                      110, 111, 112, 113, 114, 115, 116, 118, 119, 120, 121, 131)
_INTERESTING_WORDS = (b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x01\x00\x00",
                      b"\x04\x00\x00\x00", b"\xff\xff")


def mutate(rng, data):
    """One mutated variant of an encoded term: bit flips, tag/length smashing, truncation, splicing."""
    data = bytearray(data)
    for dummy in range(rng.choice((1, 1, 1, 2, 3))):
        action = rng.randint(0, 7)
        pos = rng.randrange(len(data)) if data else 0
        if action == 0 and data:
            data[pos] ^= 1 << rng.randint(0, 7)
        elif action == 1 and data:
            data[pos] = rng.choice(_INTERESTING_BYTES)
        elif action == 2:
            word = rng.choice(_INTERESTING_WORDS)
            data[pos:pos + len(word)] = word
        elif action == 3:
            del data[rng.randint(0, len(data)):]
        elif action == 4:
            data[pos:pos] = bytes(rng.getrandbits(8) for dummy in range(rng.randint(1, 8)))
        elif action == 5 and data:
            start = rng.randrange(len(data))
            data[pos:pos] = data[start:start + rng.randint(1, 16)]
        elif action == 6 and data:
            del data[pos:pos + rng.randint(1, 8)]
        else:
            data[pos:pos] = bytes((rng.choice(_INTERESTING_BYTES),))
    if rng.random() < 0.9:
        data[:1] = b"\x83"
    return bytes(data)


def random_input(rng, seeds):
    """A fuzz input: mostly a mutated seed, sometimes random bytes behind the version byte."""
    if rng.random() < 0.1:
        return b"\x83" + bytes(rng.getrandbits(8) for dummy in range(rng.randint(0, 64)))
    return mutate(rng, rng.choice(seeds))


def seed_corpus(rng, nodes=(), count=60):
    """Encoded terms to mutate: random terms (plain and compressed) and every node-made term of each node."""
    seeds = []
    for dummy in range(count):
        term = random_term(rng)
        seeds.append(encode(term))
        seeds.append(encode(term, compressed=True))
    for node in nodes:
        for expressions in NODE_EXPRESSIONS.values():
            seeds.extend(node.evaluate(expressions).values())
    return seeds
