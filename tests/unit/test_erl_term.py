"""External Term Format codec, checked both ways against real OTP 25 and OTP 28 nodes.

Each release runs ONE `erl` (tests/termcorpus.py: TermNode) for the whole module. For every generated term:
our bytes go to the node (binary_to_term), the node's re-encodings (default, compressed, minor_version 0/1/2)
come back, we decode each of them, and the node checks with =:= that our re-encodings are the same term.
"""
import collections
import enum
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from otp import runtimes
from termcorpus import ENCODINGS, NODE_EXPRESSIONS, NodeError, TermNode
from ansible_collections.beamops.cluster.plugins.module_utils import erl_term
from ansible_collections.beamops.cluster.plugins.module_utils.erl_term import (
    Atom, BitBinary, ErlMap, Export, Fun, ImproperList, Pid, Port, Reference, TermError, decode, decode_from, encode)

RUNTIMES = runtimes()
ALL_AGREE = [1] * len(ENCODINGS)


@pytest.fixture(name="node", scope="module", params=sorted(RUNTIMES))
def node_fixture(request):
    """One TermNode per OTP release, shared by the module."""
    term_node = TermNode(RUNTIMES[request.param])
    term_node.release = request.param
    yield term_node
    term_node.close()


# Strategies: terms in the form decode() returns them -------------------------------------------

INT_BOUNDARIES = [0, 255, 256, -1, 2 ** 31 - 1, 2 ** 31, -2 ** 31, -2 ** 31 - 1, 2 ** 64, -2 ** 64,
                  2 ** (8 * 255) - 1, 2 ** (8 * 255), -(2 ** (8 * 255) - 1), -(2 ** (8 * 255))]
u32 = st.integers(0, 2 ** 32 - 1)
integers = st.one_of(st.integers(), st.integers(-2 ** 70, 2 ** 70), st.integers(-2 ** 2100, 2 ** 2100),
                     st.sampled_from(INT_BOUNDARIES))
floats = st.floats(allow_nan=False, allow_infinity=False)
atom_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=255)
atoms = st.one_of(atom_text, st.sampled_from(["ok", "undefined", "", "é", "🐝" * 255])).filter(
    lambda text: text not in ("true", "false")).map(Atom)
node_names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).map(Atom)
byte_strings = st.lists(st.integers(0, 255), min_size=1, max_size=40)


def bit_binary(data, bits):
    return BitBinary(data[:-1] + bytes((data[-1] & (0xFF << (8 - bits)) & 0xFF,)), bits)


def as_map(pairs):
    """The documented decode rule: dict unless a key is unhashable or keys collide in Python."""
    try:
        result = dict(pairs)
    except TypeError:
        return ErlMap(pairs)
    return result if len(result) == len(pairs) else ErlMap(pairs)


leaves = st.one_of(
    integers, floats, atoms, st.booleans(), st.binary(max_size=64), byte_strings, st.just([]),
    st.builds(bit_binary, st.binary(min_size=1, max_size=8), st.integers(1, 7)),
    st.builds(Pid, node_names, u32, u32, u32),
    st.builds(Reference, node_names, u32, st.lists(u32, min_size=1, max_size=5).map(tuple)),
    st.builds(Port, node_names, st.integers(0, 2 ** 64 - 1), u32),
    st.builds(Export, atoms, atoms, st.integers(0, 255)),
)
# Map keys: no dicts inside (so repr tells Erlang-distinct keys apart), +0.0 only (OTP 25 has 0.0 =:= -0.0).
key_leaves = st.one_of(integers, floats.map(lambda value: value + 0.0), atoms, st.booleans(), st.binary(max_size=8),
                       st.builds(Pid, node_names, u32, u32, u32))
map_keys = st.recursive(key_leaves, lambda inner: st.one_of(st.lists(inner, max_size=3).map(tuple),
                                                            st.lists(inner, max_size=3)), max_leaves=4)
odd_keys = st.one_of(map_keys, st.sampled_from([1, 1.0, True, Atom("ok"), b"ok", [1], (1,), 0.0]))


def containers(children):
    proper_tails = children.filter(lambda tail: not isinstance(tail, (list, ImproperList)))
    return st.one_of(
        st.lists(children, max_size=6).map(tuple),
        st.lists(children, max_size=6),
        st.builds(ImproperList, st.lists(children, min_size=1, max_size=4).map(tuple), proper_tails),
        st.lists(st.tuples(odd_keys, children), max_size=5, unique_by=lambda pair: repr(pair[0])).map(as_map),
    )


terms = st.recursive(leaves, containers, max_leaves=25)


def contains(term, kinds):
    if isinstance(term, kinds):
        return True
    if isinstance(term, dict):
        return any(contains(key, kinds) or contains(value, kinds) for key, value in term.items())
    if isinstance(term, ImproperList):
        return any(contains(item, kinds) for item in term.elements) or contains(term.tail, kinds)
    if isinstance(term, (list, tuple)) and not isinstance(term, (Pid, Port, Reference, Export, BitBinary)):
        return any(contains(item, kinds) for item in term)
    return False


# Property: both directions agree with the node ------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(term=terms)
def test_node_agrees_both_ways(node, term):
    ours = encode(term)
    assert decode(ours) == term
    encodings, same = node.roundtrip(ours, [encode(term, compressed=True)])
    assert same == [1], "the node does not read encode(term, compressed=True) as the same term"
    redone = []
    for name, data in encodings.items():
        decoded = decode(data)
        assert decoded == term, "decoding the node's %s encoding" % name
        redone.append(encode(decoded))
    # Python's == treats 1, 1.0 and True alike: the node's =:= is the exact check.
    dummy, same = node.roundtrip(ours, redone)
    assert same == ALL_AGREE, "node's =:= per re-encoded %s" % (ENCODINGS,)
    # OTP 25 writes NEW_PORT_EXT where OTP 26+ (and we) write V4_PORT_EXT.
    if node.release != "25" or not contains(term, Port):
        assert encode(decode(encodings["minor2"])) == encodings["minor2"], "re-encoding is not byte-identical"
    if node.release != "25" and not contains(term, (dict, ErlMap)):
        # Erlang's own tag choices (map order is the node's internal one, so maps are left out).
        assert ours == encodings["default"]


@pytest.mark.parametrize("value", INT_BOUNDARIES + [2 ** 2040 - 1, 2 ** 2048, -(2 ** 2048)])
def test_integer_tags_match_term_to_binary(node, value):
    encodings, dummy = node.roundtrip(encode(value))
    assert encode(value) == encodings["minor2"]
    assert decode(encodings["default"]) == value


@pytest.mark.parametrize("term", [
    list(range(256)) * 256,                       # 65536 bytes: too long for STRING_EXT, becomes LIST_EXT
    list(range(256)) * 255 + list(range(255)),    # 65535 bytes: STRING_EXT
    tuple(range(300)),                            # LARGE_TUPLE_EXT
    Atom("é" * 200),                              # 400 bytes of UTF-8: ATOM_UTF8_EXT
    [True, False], b"", [], (), BitBinary(b"\x80", 1), -0.0, 5e-324,
], ids=["list65536", "string65535", "large_tuple", "atom_utf8", "bools", "empty_binary", "nil", "empty_tuple",
        "bit1", "minus_zero", "denormal"])
def test_tag_choice_matches_term_to_binary(node, term):
    encodings, dummy = node.roundtrip(encode(term))
    if node.release != "25":
        assert encode(term) == encodings["default"]
    assert encode(term) == encodings["minor2"]
    assert decode(encodings["minor0"]) == term


EXPECTED_TYPES = {"pid": Pid, "spawned_pid": Pid, "reference": Reference, "alias": Reference, "monitor": Reference,
                  "port": Port, "export": Export, "closure": Fun, "nested_closure": Fun, "mixed": tuple}


@pytest.mark.parametrize("name", sorted(NODE_EXPRESSIONS))
def test_node_made_terms(node, name):
    encodings = node.evaluate(NODE_EXPRESSIONS[name])
    decoded = [decode(data) for data in encodings.values()]
    first = decoded[0]
    assert isinstance(first, EXPECTED_TYPES[name])
    assert all(item == first for item in decoded)
    dummy, same = node.roundtrip(encodings["default"], [encode(item) for item in decoded])
    assert same == ALL_AGREE
    if not (name == "port" and node.release == "25"):
        assert encode(decode(encodings["minor2"])) == encodings["minor2"]
    if isinstance(first, (Pid, Reference, Port)):
        assert first.node == "nonode@nohost"


def test_closure_fields(node):
    fun = decode(node.evaluate(NODE_EXPRESSIONS["closure"])["default"])
    assert fun.module == "erl_eval" and fun.arity == 1 and len(fun.uniq) == 16
    assert isinstance(fun.pid, Pid)
    # erl_eval keeps the bindings among the free variables: X = 42 and Y = <<"free">> are in there.
    flat = repr(fun.free_vars)
    assert "42" in flat and "b'free'" in flat


def test_local_format(node):
    try:
        plain = node.evaluate('term_to_binary({a, [1, 2], <<"x">>}, [local]).')
    except NodeError:
        assert node.release == "25", "only OTP 26+ has term_to_binary(T, [local])"
        return
    data = decode(plain["default"])
    assert data[1] == erl_term.LOCAL_EXT
    assert decode(data) == (Atom("a"), [1, 2], b"x")
    compressed = decode(node.evaluate('term_to_binary({a, lists:duplicate(100, $x)}, [local, compressed]).')["default"])
    assert compressed[1] == erl_term.COMPRESSED
    assert decode(compressed) == (Atom("a"), [ord("x")] * 100)
    with pytest.raises(TermError, match="LOCAL_EXT"):
        decode(decode(node.evaluate("term_to_binary({self()}, [local]).")["default"]))


@pytest.mark.parametrize("delta", [-1, 1])
def test_fun_size_field_is_ignored_like_the_node_does(node, delta):
    data = node.evaluate(NODE_EXPRESSIONS["closure"])["default"]
    size = struct.unpack(">I", data[2:6])[0]
    wrong = data[:2] + struct.pack(">I", size + delta) + data[6:]
    dummy, same = node.roundtrip(data, [wrong, encode(decode(wrong))])
    assert same == [1, 1]
    assert encode(decode(wrong)) == encode(decode(data))


def test_deep_nesting_within_limit_matches_node(node):
    term = []
    for dummy in range(3000):
        term = [term, 1]
    encodings, same = node.roundtrip(encode(term), [encode(term, compressed=True)])
    assert same == [1]
    # Python's == recurses; compare the (iteratively made) encodings instead.
    assert encode(decode(encodings["default"])) == encode(term)


# Legacy forms that OTP 25+ no longer writes, and that the node still reads as the same term --------------

NODE_A = b"d\x00\x05a@b.c"
LEGACY = {
    "ATOM_EXT": (b"\x83d\x00\x02ok", Atom("ok")),
    "SMALL_ATOM_EXT latin-1": (b"\x83s\x01\xe9", Atom("é")),
    "ATOM_EXT true": (b"\x83d\x00\x04true", True),
    "PID_EXT": (b"\x83g" + NODE_A + b"\x00\x00\x00\x07\x00\x00\x00\x01\x02", Pid(Atom("a@b.c"), 7, 1, 2)),
    "PORT_EXT": (b"\x83f" + NODE_A + b"\x00\x00\x00\x07\x01", Port(Atom("a@b.c"), 7, 1)),
    "NEW_PORT_EXT": (b"\x83Y" + NODE_A + b"\x00\x00\x00\x07\x00\x00\x00\x09", Port(Atom("a@b.c"), 7, 9)),
    "REFERENCE_EXT": (b"\x83e" + NODE_A + b"\x00\x00\x00\x07\x01", Reference(Atom("a@b.c"), 1, (7,))),
    "NEW_REFERENCE_EXT": (b"\x83r\x00\x02" + NODE_A + b"\x02\x00\x00\x00\x01\x00\x00\x00\x02",
                          Reference(Atom("a@b.c"), 2, (1, 2))),
    "FLOAT_EXT": (b"\x83c" + b"1.50000000000000000000e+00".ljust(31, b"\0"), 1.5),
    "BIT_BINARY_EXT of 8 bits": (b"\x83M\x00\x00\x00\x01\x08\xff", b"\xff"),
    "BIT_BINARY_EXT unused bits set": (b"\x83M\x00\x00\x00\x01\x03\xff", BitBinary(b"\xe0", 3)),
    "LIST_EXT with a list tail": (b"\x83l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02j", [1, 2]),
    "SMALL_BIG_EXT zero, negative": (b"\x83n\x00\x01", 0),
    "SMALL_BIG_EXT sign byte 2": (b"\x83n\x01\x02\x05", -5),
    "MAP_EXT 1 and 1.0": (b"\x83t\x00\x00\x00\x02a\x01a\x01F?\xf0\x00\x00\x00\x00\x00\x00a\x02", ErlMap([(1, 1), (1.0, 2)])),
}


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_legacy_forms(node, name):
    data, expected = LEGACY[name]
    decoded = decode(data)
    assert decoded == expected and type(decoded) is type(expected)
    dummy, same = node.roundtrip(data, [encode(decoded)])
    assert same == [1]


REFUSED = {
    "duplicate map key": b"\x83t\x00\x00\x00\x02a\x01a\x01a\x01a\x02",
    "[] as pid node": b"\x83Xj\x00\x00\x00\x07\x00\x00\x00\x01\x00\x00\x00\x01",
    "256-character atom": b"\x83v\x01\x00" + b"a" * 256,
    "NaN": b"\x83F\x7f\xf8\x00\x00\x00\x00\x00\x00",
    "9 bits in a byte": b"\x83M\x00\x00\x00\x01\x09\xff",
    "6 reference words": b"\x83Z\x00\x06" + NODE_A + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x01" * 6,
    "atom cache reference": b"\x83R\x00",
    "FLOAT_EXT without a fraction": b"\x83c" + b"1e+00".ljust(31, b"\0"),
    "FLOAT_EXT with a space": b"\x83c" + b" 1.5".ljust(31, b"\0"),
    "truncated tuple": b"\x83h\x02a\x01",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_like_the_node(node, name):
    with pytest.raises(TermError):
        decode(REFUSED[name])
    with pytest.raises(NodeError, match="badarg"):
        node.roundtrip(REFUSED[name])


# Without a node: API contract and hardening --------------------------------------------------------------

def test_decode_from_walks_a_distribution_frame():
    control = encode((6, Pid(Atom("a@h"), 1, 0, 7), Atom(""), Atom("rex")))
    payload = encode((Atom("x"), b"y" * 500), compressed=True)
    frame = b"p" + control + payload + encode(1)
    term, offset = decode_from(frame, 1)
    assert term == (6, Pid(Atom("a@h"), 1, 0, 7), Atom(""), Atom("rex")) and offset == 1 + len(control)
    term, offset = decode_from(frame, offset)
    assert payload[1] == erl_term.COMPRESSED and term == (Atom("x"), b"y" * 500)
    assert decode_from(frame, offset) == (1, len(frame))
    with pytest.raises(TermError, match="after the end"):
        decode(control + b"\0")


def test_python_conventions():
    assert decode(encode("héllo")) == "héllo".encode("utf-8")      # str is an Elixir string: a UTF-8 binary
    assert encode(None) == encode(Atom("undefined"))
    assert decode(encode(Atom("true"))) is True
    assert encode(bytearray(b"ab")) == encode(memoryview(b"ab")) == encode(b"ab")
    assert decode(encode(ImproperList((1,), [2, 3]))) == [1, 2, 3]
    assert decode(encode(ImproperList((1,), ImproperList((2,), Atom("t"))))) == ImproperList((1, 2), Atom("t"))
    assert decode(encode(BitBinary(b"\xff\xff", 8))) == b"\xff\xff"
    assert ErlMap([([1], 2), (1.0, 3)]) == ErlMap([(1.0, 3), ([1], 2)])
    assert hash(ErlMap([(1, 2), (3, 4)])) == hash(ErlMap([(3, 4), (1, 2)]))
    assert ErlMap([(1, 2)]) != ((1, 2),)
    assert repr(Atom("ok")) == "Atom('ok')"
    assert decode(bytearray(encode((1, b"x")))) == decode_from(memoryview(b"\0" + encode((1, b"x"))), 1)[0] == (1, b"x")


def test_subclasses_encode_as_their_base_type():
    class Colour(enum.IntEnum):
        RED = 300

    class NamedPid(Pid):
        pass

    class Name(Atom):
        pass

    pid = Pid(Atom("a@b"), 1, 2, 3)
    assert encode(Colour.RED) == encode(300)
    assert encode(collections.OrderedDict([(1, 2)])) == encode({1: 2})
    assert encode(NamedPid(*pid)) == encode(pid)
    assert encode(Name("x")) == encode(Atom("x"))
    assert encode(collections.namedtuple("Point", "x y")(1, 2)) == encode((1, 2))


@pytest.mark.parametrize("value, message", [
    (float("nan"), "NaN"), (float("inf"), "NaN or infinity"), (object(), "no Erlang term form"), ({1, 2}, "set"),
    (Atom("x" * 256), "255"), (Pid(Atom("n"), 2 ** 32, 0, 0), "pid id"), (BitBinary(b"", 3), "BitBinary"),
    (ImproperList((), Atom("t")), "at least one element"), (Reference(Atom("n"), 0, (1,) * 6), "1..5 words"), (Reference(Atom("n"), 0, ()), "1..5 words"),
])
def test_encode_refuses(value, message):
    with pytest.raises(TermError, match=message):
        encode(value)


def test_cycles_and_deep_python_values_are_refused():
    cycle = []
    cycle.append(cycle)
    with pytest.raises(TermError, match="deeper"):
        encode(cycle)
    deep = ()
    for dummy in range(erl_term.MAX_DEPTH + 5):
        deep = (deep,)
    with pytest.raises(TermError, match="deeper"):
        encode(deep)


def test_deep_input_is_refused_without_recursion():
    with pytest.raises(TermError, match="deeper"):
        decode(b"\x83" + b"h\x01" * 200000 + b"j")
    nested = decode(b"\x83" + b"l\x00\x00\x00\x01" * 5000 + b"j" * 5001)
    for dummy in range(5000):
        nested = nested[0]
    assert nested == []


# 50 MiB of zeros deflate to about 50 KiB.
BOMB_SIZE = 50 * 1024 * 1024
BOMB_STREAM = zlib.compress(b"m" + struct.pack(">I", BOMB_SIZE) + bytes(BOMB_SIZE), 9)


@pytest.mark.parametrize("declared, limit, message", [
    (1000, erl_term.MAX_UNCOMPRESSED_SIZE, "inflates past its declared size"),
    (BOMB_SIZE + 5, 1024 * 1024, "the limit is"),
])
def test_zip_bomb_fails_before_inflating(declared, limit, message):
    bomb = b"\x83\x50" + struct.pack(">I", declared) + BOMB_STREAM
    tracemalloc.start()
    try:
        with pytest.raises(TermError, match=message):
            decode(bomb, max_uncompressed_size=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, "decoding allocated %d bytes for a bomb declared as %d" % (peak, declared)


@pytest.mark.parametrize("data, message", [
    (b"", "no term"), (b"\x82a\x01", "not the external term format version"), (b"\x83", "truncated term"),
    (b"\x83a", "SMALL_INTEGER_EXT"), (b"\x83\xff", "unknown tag 255"), (b"\x83l\xff\xff\xff\xff", "declares"),
    (b"\x83m\xff\xff\xff\xffab", "BINARY_EXT"), (b"\x83o\x00\x20\x00\x00\x00", "big integer"),
    (b"\x83w\x01\xff", "UTF-8"), (b"\x83\x83a\x01", "only allowed at the start"),
    (b"\x83P\x00\x00\x00\x02xx", "not valid zlib"), (b"\x83P\x00\x00\x00\x05" + zlib.compress(b"a\x01"), "inflates to 2"),
    (b"\x83P\x00\x00\x00\x08" + zlib.compress(b"h\x02a\x01a\x02a\x03"), "after its end"),
    (b"\x83Z\x00\x00" + NODE_A + b"\x00\x00\x00\x01", "0 id words"),
    (b"\x83p\x00\x00\x00\x05", "NEW_FUN_EXT"), (b"\x83c" + b"x" * 31, "FLOAT_EXT"), (b"\x83t\x00\x00\x00\x01j", "declares 2 elements"),
])
def test_malformed_input_names_the_problem(data, message):
    with pytest.raises(TermError, match=message):
        decode(data)
