# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Erlang External Term Format (the bytes of term_to_binary/1 and of the distribution protocol).

Pure standard-library Python (3.8+). Mapping between Erlang and Python:

============================  =======================================================================
Erlang                        Python
============================  =======================================================================
integer                       int (encoded as SMALL_INTEGER / INTEGER / SMALL_BIG / LARGE_BIG, the
                              same choice term_to_binary makes)
float                         float (NEW_FLOAT; NaN and infinities do not exist in Erlang: TermError)
atom                          Atom (a str subclass); ``true``/``false`` decode to True/False.
                              Encoding: bool -> true/false, None -> ``undefined`` (which decodes to
                              Atom('undefined'), not None).
binary                        bytes (bytearray and memoryview encode too)
bitstring                     BitBinary(data, bits): ``bits`` = used bits of the last byte (1..7);
                              a bitstring of whole bytes is a binary, so it decodes to bytes
str (not Atom)                encodes as a UTF-8 binary, the Elixir string convention; it decodes
                              back to bytes
tuple                         tuple
proper list                   list (STRING_EXT decodes to a list of ints, as in Erlang)
improper list [a, b | t]      ImproperList(elements=(a, b), tail=t)
map                           dict when every key is hashable and the keys stay distinct in Python
                              (1, 1.0 and true are one dict key but three map keys), else ErlMap:
                              an immutable sequence of (key, value) pairs in wire order whose
                              equality ignores the order. Encoding keeps the Python order.
pid / reference / port        Pid, Reference, Port (named tuples; any node, ids up to 32/64 bits)
fun M:F/A                     Export(module, function, arity)
fun (closure)                 Fun(...): decoded and re-encoded byte for byte, free variables included
============================  =======================================================================

Encoding emits what OTP 26+ term_to_binary emits: SMALL_ATOM_UTF8/ATOM_UTF8, NEW_PID,
NEWER_REFERENCE, V4_PORT (OTP 24+ decode all of them). Decoding also accepts the legacy forms
(Latin-1 atoms, FLOAT_EXT, PID_EXT, PORT_EXT, NEW_PORT, REFERENCE_EXT, NEW_REFERENCE_EXT),
compressed terms (tag 80) and the LOCAL format (tag 121, OTP 26+) as far as it is portable.

Every malformed input raises TermError (a ValueError), also from encode() for Python values that
have no Erlang form. Decoding is iterative with a depth limit, checks every length against the
remaining input before allocating, bounds big integers and inflates compressed terms only up to
their declared size.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type
# Exact type checks on purpose: True is not an integer here, and list subclasses are not plain lists.
# pylint: disable=unidiomatic-typecheck

import math
import struct
from collections import namedtuple

VERSION = 131

SMALL_INTEGER_EXT = 97
INTEGER_EXT = 98
SMALL_BIG_EXT = 110
LARGE_BIG_EXT = 111
NEW_FLOAT_EXT = 70
FLOAT_EXT = 99
ATOM_UTF8_EXT = 118
SMALL_ATOM_UTF8_EXT = 119
ATOM_EXT = 100
SMALL_ATOM_EXT = 115
ATOM_CACHE_REF = 82
SMALL_TUPLE_EXT = 104
LARGE_TUPLE_EXT = 105
NIL_EXT = 106
STRING_EXT = 107
LIST_EXT = 108
BINARY_EXT = 109
BIT_BINARY_EXT = 77
MAP_EXT = 116
PID_EXT = 103
NEW_PID_EXT = 88
REFERENCE_EXT = 101
NEW_REFERENCE_EXT = 114
NEWER_REFERENCE_EXT = 90
PORT_EXT = 102
NEW_PORT_EXT = 89
V4_PORT_EXT = 120
EXPORT_EXT = 113
NEW_FUN_EXT = 112
COMPRESSED = 80
LOCAL_EXT = 121

# Limits for untrusted input; Erlang's own limits are larger for big integers only.
MAX_DEPTH = 10000
MAX_UNCOMPRESSED_SIZE = 64 * 1024 * 1024
MAX_BIG_BYTES = 1024 * 1024
MAX_REFERENCE_WORDS = 5   # ERTS_MAX_REF_NUMBERS since OTP 24
MAX_ATOM_CHARS = 255


class TermError(ValueError):
    """The bytes are not a valid external term (or a Python value has no Erlang encoding)."""


class Atom(str):
    """An Erlang atom. Atom('ok') == 'ok' holds (it is a str), but it encodes as an atom."""
    __slots__ = ()

    def __repr__(self):
        return 'Atom(%s)' % str.__repr__(self)


class Pid(namedtuple('Pid', 'node id serial creation')):
    """An Erlang pid: node (Atom), id, serial, creation (unsigned 32-bit each)."""
    __slots__ = ()


class Reference(namedtuple('Reference', 'node creation ids')):
    """An Erlang reference: node (Atom), creation (32-bit) and ids (tuple of 1..5 32-bit words)."""
    __slots__ = ()


class Port(namedtuple('Port', 'node id creation')):
    """An Erlang port: node (Atom), id (up to 64-bit), creation (32-bit)."""
    __slots__ = ()


class ImproperList(namedtuple('ImproperList', 'elements tail')):
    """[e1, e2, ... | tail] with a tail that is not a list; elements is a non-empty tuple."""
    __slots__ = ()


class BitBinary(namedtuple('BitBinary', 'data bits')):
    """A bitstring that is not a whole number of bytes: data (bytes), bits used in the last byte."""
    __slots__ = ()


class Export(namedtuple('Export', 'module function arity')):
    """fun Module:Function/Arity."""
    __slots__ = ()


class Fun(namedtuple('Fun', 'arity uniq index module old_index old_uniq pid free_vars')):
    """A closure (NEW_FUN_EXT): arity, uniq (16 bytes), index, module (Atom), old_index, old_uniq,
    pid (Pid of the creator) and free_vars (tuple of terms)."""
    __slots__ = ()


class ErlMap(tuple):
    """An Erlang map that cannot be a dict: a tuple of (key, value) pairs in wire order.

    Used when a key is unhashable (a list, a dict) or when keys that Erlang tells apart are equal in
    Python (1, 1.0 and true). Two ErlMaps are equal when they hold the same pairs in any order.
    """
    __slots__ = ()

    def __new__(cls, pairs=()):
        return tuple.__new__(cls, (tuple(pair) for pair in pairs))

    def __eq__(self, other):
        if not isinstance(other, ErlMap):
            return False
        if len(self) != len(other):
            return False
        unmatched = list(other)
        for pair in self:
            for index, candidate in enumerate(unmatched):
                if candidate == pair:
                    del unmatched[index]
                    break
            else:
                return False
        return True

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(frozenset(self))

    def __repr__(self):
        return 'ErlMap(%s)' % tuple.__repr__(self)


_UINT32 = struct.Struct('>I')
_INT32 = struct.Struct('>i')
_UINT16 = struct.Struct('>H')
_DOUBLE = struct.Struct('>d')
_PID_TAIL = struct.Struct('>III')
_V4_PORT_TAIL = struct.Struct('>QI')
_NEW_PORT_TAIL = struct.Struct('>II')
_OLD_NC_TAIL = struct.Struct('>IB')
_FUN_HEAD = struct.Struct('>IB16sII')
_DIGITS = frozenset(b'0123456789')

_new_tuple = tuple.__new__

# Container frames of the iterative decoder.
_TUPLE, _LIST, _MAP, _FUN = range(4)


def _truncated(what, off):
    return TermError('truncated term: %s at byte %d runs past the end of the input' % (what, off))


# Decoded atoms by their UTF-8 bytes; names repeat a lot (node names, module names, ok, rex).
_atom_cache = {b'true': True, b'false': False}
_ATOM_CACHE_LIMIT = 4096


def _utf8_atom(raw, off):
    value = _atom_cache.get(raw)
    if value is not None:
        return value
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        raise TermError('atom at byte %d is not valid UTF-8' % off) from None
    if len(text) > MAX_ATOM_CHARS:
        raise TermError('atom at byte %d has %d characters; Erlang allows %d' % (off, len(text), MAX_ATOM_CHARS))
    value = Atom(text)
    if len(_atom_cache) >= _ATOM_CACHE_LIMIT:
        _atom_cache.clear()
        _atom_cache[b'true'] = True
        _atom_cache[b'false'] = False
    _atom_cache[raw] = value
    return value


def _latin1_atom(raw, off):
    if len(raw) > MAX_ATOM_CHARS:
        raise TermError('atom at byte %d has %d characters; Erlang allows %d' % (off, len(raw), MAX_ATOM_CHARS))
    text = raw.decode('latin-1')
    if text == 'true':
        return True
    if text == 'false':
        return False
    return Atom(text)


def _read_atom(buf, off, end, what):
    """An atom where the format requires one (node names, modules): returns (Atom, next offset)."""
    if off >= end:
        raise _truncated(what, off)
    tag = buf[off]
    decoder = _ATOM_DECODERS.get(tag)
    if decoder is not None:
        value, off = decoder(buf, off + 1, end)
        if value is True or value is False:
            value = Atom('true' if value else 'false')
        return value, off
    if tag == NIL_EXT:
        # term_to_binary(T, [local]) writes [] for the node of local pids, ports and references.
        raise TermError('%s at byte %d is [] where an atom belongs: term_to_binary(T, [local]) (LOCAL_EXT) writes that '
                        'for local pids, ports and references, which only the encoding runtime instance can resolve'
                        % (what, off))
    raise TermError('%s at byte %d must be an atom, found tag %d' % (what, off, tag))


def _read_small_int(buf, off, end, what):
    """SMALL_INTEGER_EXT or INTEGER_EXT where the format requires an integer (fun fields)."""
    if off >= end:
        raise _truncated(what, off)
    tag = buf[off]
    if tag == SMALL_INTEGER_EXT:
        return _dec_small_integer(buf, off + 1, end)
    if tag == INTEGER_EXT:
        return _dec_integer(buf, off + 1, end)
    raise TermError('%s at byte %d must be a small integer, found tag %d' % (what, off, tag))


def _read_pid(buf, off, end):
    """A pid where the format requires one (the creator of a fun)."""
    if off >= end:
        raise _truncated('fun creator pid', off)
    tag = buf[off]
    if tag not in (NEW_PID_EXT, PID_EXT):
        raise TermError('fun creator at byte %d must be a pid, found tag %d' % (off, tag))
    decoder = _SCALARS[tag]
    return decoder(buf, off + 1, end)


def _dec_small_integer(buf, off, end):
    if off >= end:
        raise _truncated('SMALL_INTEGER_EXT', off)
    return buf[off], off + 1


def _dec_integer(buf, off, end):
    if off + 4 > end:
        raise _truncated('INTEGER_EXT', off)
    return _INT32.unpack_from(buf, off)[0], off + 4


def _dec_big(buf, off, end, size, start):
    if size > MAX_BIG_BYTES:
        raise TermError('big integer at byte %d has %d bytes; the limit is %d' % (off, size, MAX_BIG_BYTES))
    stop = start + 1 + size
    if stop > end:
        raise _truncated('big integer', off)
    value = int.from_bytes(buf[start + 1:stop], 'little')
    # Erlang reads any non-zero sign byte as negative.
    return (-value if buf[start] else value), stop


def _dec_small_big(buf, off, end):
    if off + 2 > end:
        raise _truncated('SMALL_BIG_EXT', off)
    return _dec_big(buf, off, end, buf[off], off + 1)


def _dec_large_big(buf, off, end):
    if off + 5 > end:
        raise _truncated('LARGE_BIG_EXT', off)
    return _dec_big(buf, off, end, _UINT32.unpack_from(buf, off)[0], off + 4)


def _finite(value, off):
    if math.isinf(value) or math.isnan(value):
        raise TermError('float at byte %d is not finite; Erlang has no NaN or infinity' % off)
    return value


def _dec_new_float(buf, off, end):
    if off + 8 > end:
        raise _truncated('NEW_FLOAT_EXT', off)
    return _finite(_DOUBLE.unpack_from(buf, off)[0], off), off + 8


def _is_digits(text):
    return bool(text) and _DIGITS.issuperset(text)


def _is_float_text(text):
    """``[+-]digits.digits[(e|E)[+-]digits]``, checked by hand: re is a few ms of import for a fresh process."""
    mantissa, marker, exponent = text.replace(b'E', b'e').partition(b'e')
    if marker and exponent[:1] in (b'+', b'-'):
        exponent = exponent[1:]
    if mantissa[:1] in (b'+', b'-'):
        mantissa = mantissa[1:]
    whole, dot, fraction = mantissa.partition(b'.')
    return bool(dot) and _is_digits(whole) and _is_digits(fraction) and (not marker or _is_digits(exponent))


def _dec_float(buf, off, end):
    if off + 31 > end:
        raise _truncated('FLOAT_EXT', off)
    text = buf[off:off + 31].split(b'\0', 1)[0]
    # Python's float() also takes '1_0', ' 1', '1', 'nan' and 'inf'; binary_to_term wants digits.digits[e[+-]digits].
    if not _is_float_text(text):
        raise TermError('FLOAT_EXT at byte %d is not a decimal float: %r' % (off, text))
    return _finite(float(text), off), off + 31


def _dec_small_atom_utf8(buf, off, end):
    if off >= end:
        raise _truncated('SMALL_ATOM_UTF8_EXT', off)
    stop = off + 1 + buf[off]
    if stop > end:
        raise _truncated('SMALL_ATOM_UTF8_EXT', off)
    raw = buf[off + 1:stop]
    value = _atom_cache.get(raw)
    return (_utf8_atom(raw, off) if value is None else value), stop


def _dec_atom_utf8(buf, off, end):
    if off + 2 > end:
        raise _truncated('ATOM_UTF8_EXT', off)
    stop = off + 2 + _UINT16.unpack_from(buf, off)[0]
    if stop > end:
        raise _truncated('ATOM_UTF8_EXT', off)
    return _utf8_atom(buf[off + 2:stop], off), stop


def _dec_small_atom(buf, off, end):
    if off >= end:
        raise _truncated('SMALL_ATOM_EXT', off)
    stop = off + 1 + buf[off]
    if stop > end:
        raise _truncated('SMALL_ATOM_EXT', off)
    return _latin1_atom(buf[off + 1:stop], off), stop


def _dec_atom(buf, off, end):
    if off + 2 > end:
        raise _truncated('ATOM_EXT', off)
    stop = off + 2 + _UINT16.unpack_from(buf, off)[0]
    if stop > end:
        raise _truncated('ATOM_EXT', off)
    return _latin1_atom(buf[off + 2:stop], off), stop


def _dec_nil(buf, off, end):
    return [], off


def _dec_string(buf, off, end):
    if off + 2 > end:
        raise _truncated('STRING_EXT', off)
    stop = off + 2 + _UINT16.unpack_from(buf, off)[0]
    if stop > end:
        raise _truncated('STRING_EXT', off)
    return list(buf[off + 2:stop]), stop


def _dec_binary(buf, off, end):
    if off + 4 > end:
        raise _truncated('BINARY_EXT', off)
    stop = off + 4 + _UINT32.unpack_from(buf, off)[0]
    if stop > end:
        raise _truncated('BINARY_EXT', off)
    return buf[off + 4:stop], stop


def _dec_bit_binary(buf, off, end):
    if off + 5 > end:
        raise _truncated('BIT_BINARY_EXT', off)
    size = _UINT32.unpack_from(buf, off)[0]
    bits = buf[off + 4]
    stop = off + 5 + size
    if stop > end:
        raise _truncated('BIT_BINARY_EXT', off)
    if size == 0:
        if bits != 0:
            raise TermError('BIT_BINARY_EXT at byte %d is empty but claims %d bits' % (off, bits))
        return b'', stop
    if not 1 <= bits <= 8:
        raise TermError('BIT_BINARY_EXT at byte %d has %d bits in its last byte; expected 1..8' % (off, bits))
    data = buf[off + 5:stop]
    if bits == 8:
        return data, stop
    # Erlang ignores the unused low bits of the last byte; clear them so equal bitstrings compare equal.
    last = data[-1] & (0xFF << (8 - bits)) & 0xFF
    return BitBinary(data[:-1] + bytes((last,)), bits), stop


def _dec_new_pid(buf, off, end):
    node, off = _read_atom(buf, off, end, 'pid node')
    if off + 12 > end:
        raise _truncated('NEW_PID_EXT', off)
    # tuple.__new__ skips the named tuple's Python-level __new__: pids are the commonest non-scalar.
    return _new_tuple(Pid, (node,) + _PID_TAIL.unpack_from(buf, off)), off + 12


def _dec_pid(buf, off, end):
    node, off = _read_atom(buf, off, end, 'pid node')
    if off + 9 > end:
        raise _truncated('PID_EXT', off)
    ident, serial = _NEW_PORT_TAIL.unpack_from(buf, off)
    return Pid(node, ident, serial, buf[off + 8]), off + 9


def _dec_v4_port(buf, off, end):
    node, off = _read_atom(buf, off, end, 'port node')
    if off + 12 > end:
        raise _truncated('V4_PORT_EXT', off)
    ident, creation = _V4_PORT_TAIL.unpack_from(buf, off)
    return Port(node, ident, creation), off + 12


def _dec_new_port(buf, off, end):
    node, off = _read_atom(buf, off, end, 'port node')
    if off + 8 > end:
        raise _truncated('NEW_PORT_EXT', off)
    ident, creation = _NEW_PORT_TAIL.unpack_from(buf, off)
    return Port(node, ident, creation), off + 8


def _dec_port(buf, off, end):
    node, off = _read_atom(buf, off, end, 'port node')
    if off + 5 > end:
        raise _truncated('PORT_EXT', off)
    ident, creation = _OLD_NC_TAIL.unpack_from(buf, off)
    return Port(node, ident, creation), off + 5


def _dec_reference(buf, off, end):
    node, off = _read_atom(buf, off, end, 'reference node')
    if off + 5 > end:
        raise _truncated('REFERENCE_EXT', off)
    ident, creation = _OLD_NC_TAIL.unpack_from(buf, off)
    return Reference(node, creation, (ident,)), off + 5


def _dec_new_references(buf, off, end, creation_size):
    if off + 2 > end:
        raise _truncated('reference', off)
    words = _UINT16.unpack_from(buf, off)[0]
    # Erlang reads a reference without id words at the top level but refuses it inside a list: refuse it always.
    if not 1 <= words <= MAX_REFERENCE_WORDS:
        raise TermError('reference at byte %d has %d id words; expected 1..%d' % (off, words, MAX_REFERENCE_WORDS))
    node, pos = _read_atom(buf, off + 2, end, 'reference node')
    stop = pos + creation_size + 4 * words
    if stop > end:
        raise _truncated('reference', off)
    if creation_size == 4:
        creation = _UINT32.unpack_from(buf, pos)[0]
    else:
        creation = buf[pos]
    ids = struct.unpack_from('>%dI' % words, buf, pos + creation_size)
    return Reference(node, creation, ids), stop


def _dec_new_reference(buf, off, end):
    return _dec_new_references(buf, off, end, 1)


def _dec_newer_reference(buf, off, end):
    return _dec_new_references(buf, off, end, 4)


def _dec_export(buf, off, end):
    module, off = _read_atom(buf, off, end, 'export module')
    function, off = _read_atom(buf, off, end, 'export function')
    if off + 2 > end:
        raise _truncated('EXPORT_EXT arity', off)
    if buf[off] != SMALL_INTEGER_EXT:
        raise TermError('export arity at byte %d must be a SMALL_INTEGER_EXT, found tag %d' % (off, buf[off]))
    return Export(module, function, buf[off + 1]), off + 2


def _dec_atom_cache_ref(buf, off, end):
    raise TermError('ATOM_CACHE_REF at byte %d needs a distribution header atom cache; '
                    'connect without DIST_HDR_ATOM_CACHE' % (off - 1))


_ATOM_DECODERS = {
    SMALL_ATOM_UTF8_EXT: _dec_small_atom_utf8,
    ATOM_UTF8_EXT: _dec_atom_utf8,
    SMALL_ATOM_EXT: _dec_small_atom,
    ATOM_EXT: _dec_atom,
}

_SCALARS = {
    SMALL_INTEGER_EXT: _dec_small_integer,
    INTEGER_EXT: _dec_integer,
    SMALL_ATOM_UTF8_EXT: _dec_small_atom_utf8,
    ATOM_UTF8_EXT: _dec_atom_utf8,
    NIL_EXT: _dec_nil,
    BINARY_EXT: _dec_binary,
    NEW_PID_EXT: _dec_new_pid,
    NEWER_REFERENCE_EXT: _dec_newer_reference,
    NEW_FLOAT_EXT: _dec_new_float,
    STRING_EXT: _dec_string,
    SMALL_BIG_EXT: _dec_small_big,
    LARGE_BIG_EXT: _dec_large_big,
    ATOM_EXT: _dec_atom,
    SMALL_ATOM_EXT: _dec_small_atom,
    FLOAT_EXT: _dec_float,
    BIT_BINARY_EXT: _dec_bit_binary,
    PID_EXT: _dec_pid,
    V4_PORT_EXT: _dec_v4_port,
    NEW_PORT_EXT: _dec_new_port,
    PORT_EXT: _dec_port,
    REFERENCE_EXT: _dec_reference,
    NEW_REFERENCE_EXT: _dec_new_reference,
    EXPORT_EXT: _dec_export,
    ATOM_CACHE_REF: _dec_atom_cache_ref,
}


def _finish_list(items):
    """items = elements + [tail]; Erlang flattens a list tail into the list."""
    tail = items.pop()
    if type(tail) is list:
        items.extend(tail)
        return items
    if type(tail) is ImproperList:
        items.extend(tail.elements)
        return ImproperList(tuple(items), tail.tail)
    return ImproperList(tuple(items), tail)


def _finish_map(items):
    keys = items[0::2]
    try:
        result = dict(zip(keys, items[1::2]))
    except TypeError:
        result = None
    if result is not None and len(result) == len(keys):
        return result
    try:
        distinct = len(set(_exact_key(key) for key in keys))
    except RecursionError:
        raise TermError('map key nests too deeply to check it for duplicates') from None
    if distinct != len(keys):
        raise TermError('map has a duplicate key; Erlang refuses such maps')
    return ErlMap(zip(keys, items[1::2]))


def _exact_key(term):
    """A hashable stand-in for a decoded term, equal exactly when Erlang's =:= holds (1 and 1.0 differ)."""
    kind = type(term)
    if kind is tuple or kind is list:
        return (kind, tuple(_exact_key(item) for item in term))
    if kind is dict or kind is ErlMap:
        pairs = term.items() if kind is dict else term
        return (ErlMap, frozenset((_exact_key(key), _exact_key(value)) for key, value in pairs))
    if kind is ImproperList:
        return (kind, _exact_key(list(term.elements)), _exact_key(term.tail))
    if kind is Fun:
        return (kind, term[:7], _exact_key(list(term.free_vars)))
    if kind is float:
        return (kind, _DOUBLE.pack(term))
    return (kind, term)


def _decode_body(buf, off, end):
    """Decode one term starting at buf[off] (a tag, not the version byte): (term, next offset)."""
    scalars = _SCALARS
    stack = []
    while True:
        if off >= end:
            raise _truncated('term', off)
        tag = buf[off]
        off += 1
        decoder = scalars.get(tag)
        if decoder is not None:
            value, off = decoder(buf, off, end)
        else:
            if tag == SMALL_TUPLE_EXT:
                if off >= end:
                    raise _truncated('SMALL_TUPLE_EXT', off)
                count = buf[off]
                off += 1
                frame = [_TUPLE, [], count, None]
            elif tag == LIST_EXT:
                if off + 4 > end:
                    raise _truncated('LIST_EXT', off)
                count = _UINT32.unpack_from(buf, off)[0] + 1
                off += 4
                frame = [_LIST, [], count, None]
            elif tag == MAP_EXT:
                if off + 4 > end:
                    raise _truncated('MAP_EXT', off)
                count = 2 * _UINT32.unpack_from(buf, off)[0]
                off += 4
                frame = [_MAP, [], count, None]
            elif tag == LARGE_TUPLE_EXT:
                if off + 4 > end:
                    raise _truncated('LARGE_TUPLE_EXT', off)
                count = _UINT32.unpack_from(buf, off)[0]
                off += 4
                frame = [_TUPLE, [], count, None]
            elif tag == NEW_FUN_EXT:
                frame, off = _fun_frame(buf, off, end)
                count = frame[2]
            elif tag in (COMPRESSED, LOCAL_EXT, VERSION):
                raise TermError('tag %d at byte %d is only allowed at the start of a term' % (tag, off - 1))
            else:
                raise TermError('unknown tag %d at byte %d' % (tag, off - 1))
            # Every element takes at least one byte: refuse counts the input cannot hold before allocating.
            if count > end - off:
                raise TermError('container at byte %d declares %d elements but only %d bytes remain'
                                % (off, count, end - off))
            if count:
                if len(stack) >= MAX_DEPTH:
                    raise TermError('term nests deeper than %d levels' % MAX_DEPTH)
                stack.append(frame)
                continue
            value = _finish(frame)
        # Hand the finished value to the enclosing containers, closing those that are complete.
        while stack:
            frame = stack[-1]
            frame[1].append(value)
            frame[2] -= 1
            if frame[2]:
                break
            stack.pop()
            value = _finish(frame)
        else:
            return value, off


def _finish(frame):
    """The value of a container whose elements are all decoded."""
    kind, items = frame[0], frame[1]
    if kind == _TUPLE:
        return tuple(items)
    if kind == _LIST:
        return _finish_list(items)
    if kind == _MAP:
        return _finish_map(items)
    return frame[3]._replace(free_vars=tuple(items))


def _fun_frame(buf, off, end):
    if off + 29 > end:
        raise _truncated('NEW_FUN_EXT', off)
    # Like binary_to_term, ignore the Size field (encode() writes the true size).
    arity, uniq, index, free_count = _FUN_HEAD.unpack_from(buf, off)[1:]
    off += 29
    module, off = _read_atom(buf, off, end, 'fun module')
    old_index, off = _read_small_int(buf, off, end, 'fun old index')
    old_uniq, off = _read_small_int(buf, off, end, 'fun old uniq')
    pid, off = _read_pid(buf, off, end)
    fun = Fun(arity, uniq, index, module, old_index, old_uniq, pid, ())
    return [_FUN, [], free_count, fun], off


def _inflate(buf, off, end, max_size):
    """Body of a compressed term: (bytes, offset after the zlib stream)."""
    if off + 4 > end:
        raise _truncated('compressed term size', off)
    size = _UINT32.unpack_from(buf, off)[0]
    if size > max_size:
        raise TermError('compressed term at byte %d declares %d uncompressed bytes; the limit is %d'
                        % (off - 1, size, max_size))
    import zlib  # compressed terms are rare: a plain run of the client does not load zlib
    inflater = zlib.decompressobj()
    try:
        # max_length stops a zip bomb at the declared size instead of inflating all of it.
        body = inflater.decompress(memoryview(buf)[off + 4:end], size + 1)
    except zlib.error as exc:
        raise TermError('compressed term at byte %d is not valid zlib data: %s' % (off - 1, exc)) from None
    if len(body) > size:
        raise TermError('compressed term at byte %d inflates past its declared size %d' % (off - 1, size))
    if not inflater.eof:
        raise TermError('compressed term at byte %d is truncated: %d of %d bytes' % (off - 1, len(body), size))
    if len(body) != size:
        raise TermError('compressed term at byte %d inflates to %d bytes, not the declared %d'
                        % (off - 1, len(body), size))
    return body, end - len(inflater.unused_data)


def decode_from(data, offset=0, max_uncompressed_size=MAX_UNCOMPRESSED_SIZE):
    """Decode the term whose version byte (131) is at data[offset]: returns (term, next offset).

    Used for distribution frames, where a control message and a payload follow each other.
    """
    if not isinstance(data, bytes):
        try:
            data = bytes(data)
        except TypeError:
            raise TermError('expected bytes, got %s' % type(data).__name__) from None
    end = len(data)
    if offset < 0 or offset >= end:
        raise TermError('no term at byte %d: the input has %d bytes' % (offset, end))
    if data[offset] != VERSION:
        raise TermError('byte %d is %d, not the external term format version 131' % (offset, data[offset]))
    off = offset + 1
    if off < end and data[off] == COMPRESSED:
        body, next_offset = _inflate(data, off + 1, end, max_uncompressed_size)
        term, used = _decode_top(body, 0, len(body))
        if used != len(body):
            raise TermError('compressed term has %d bytes after its end' % (len(body) - used))
        return term, next_offset
    return _decode_top(data, off, end)


def decode_untagged(data, offset):
    """Decode the term whose tag (not a version byte) is at data[offset] of ``bytes``: (term, next offset).

    For reading the parts of a message one by one, e.g. the reference of a ``{Ref, Reply}`` before its reply.
    """
    if offset < 0 or offset >= len(data):
        raise TermError('no term at byte %d: the input has %d bytes' % (offset, len(data)))
    return _decode_body(data, offset, len(data))


def _decode_top(buf, off, end):
    if off < end and buf[off] == LOCAL_EXT:
        # LOCAL_EXT: a 4-byte hash of the encoding runtime, then the term; pids, ports and references
        # are then bare local numbers that only that runtime can resolve (_read_atom refuses them).
        if off + 5 > end:
            raise _truncated('LOCAL_EXT', off)
        return _decode_body(buf, off + 5, end)
    return _decode_body(buf, off, end)


def decode(data, max_uncompressed_size=MAX_UNCOMPRESSED_SIZE):
    """Decode one whole external term (starting with 131).

    Trailing bytes are an error (binary_to_term/1 ignores them, but here they mean a framing mistake).
    """
    term, used = decode_from(data, 0, max_uncompressed_size)
    if used != len(data):
        raise TermError('%d bytes after the end of the term (at byte %d)' % (len(data) - used, used))
    return term


# Encoding -------------------------------------------------------------------------------------

_NIL_MARK = object()
_ATOM_TRUE = b'\x77\x04true'
_ATOM_FALSE = b'\x77\x05false'
_ATOM_UNDEFINED = b'\x77\x09undefined'
# Encoded atoms by name, the mirror of _atom_cache.
_encoded_atoms = {}


def _enc_atom(text):
    encoded = _encoded_atoms.get(text)
    if encoded is not None:
        return encoded
    raw = text.encode('utf-8')
    size = len(raw)
    if size < 256:
        encoded = bytes((SMALL_ATOM_UTF8_EXT, size)) + raw
    elif len(text) > MAX_ATOM_CHARS:
        raise TermError('atom %r has %d characters; Erlang allows %d' % (text[:40], len(text), MAX_ATOM_CHARS))
    else:
        encoded = bytes((ATOM_UTF8_EXT,)) + _UINT16.pack(size) + raw
    if len(_encoded_atoms) >= _ATOM_CACHE_LIMIT:
        _encoded_atoms.clear()
    _encoded_atoms[text] = encoded
    return encoded


def _enc_node(node, what):
    if not isinstance(node, str):
        raise TermError('%s must be an atom (str), got %r' % (what, node))
    return _enc_atom(node)


def _enc_int(value):
    if 0 <= value <= 255:
        return bytes((SMALL_INTEGER_EXT, value))
    if -0x80000000 <= value <= 0x7FFFFFFF:
        return b'\x62' + _INT32.pack(value)
    magnitude = -value if value < 0 else value
    size = (magnitude.bit_length() + 7) // 8
    digits = magnitude.to_bytes(size, 'little')
    sign = b'\x01' if value < 0 else b'\x00'
    if size < 256:
        return bytes((SMALL_BIG_EXT, size)) + sign + digits
    return b'\x6f' + _UINT32.pack(size) + sign + digits


def _enc_float(value):
    if math.isinf(value) or math.isnan(value):
        raise TermError('float %r has no Erlang form (Erlang has no NaN or infinity)' % value)
    return b'\x46' + _DOUBLE.pack(value)


def _enc_uint(value, limit, what):
    if type(value) is not int or not 0 <= value < limit:
        raise TermError('%s must be an integer in 0..%d, got %r' % (what, limit - 1, value))
    return value


def _enc_pid(pid):
    return (b'\x58' + _enc_node(pid.node, 'pid node')
            + _PID_TAIL.pack(_enc_uint(pid.id, 1 << 32, 'pid id'), _enc_uint(pid.serial, 1 << 32, 'pid serial'),
                             _enc_uint(pid.creation, 1 << 32, 'pid creation')))


def _enc_reference(ref):
    ids = tuple(ref.ids)
    if not 1 <= len(ids) <= MAX_REFERENCE_WORDS:
        raise TermError('reference ids must hold 1..%d words, got %d' % (MAX_REFERENCE_WORDS, len(ids)))
    words = [_enc_uint(word, 1 << 32, 'reference id word') for word in ids]
    return (b'\x5a' + _UINT16.pack(len(ids)) + _enc_node(ref.node, 'reference node')
            + _UINT32.pack(_enc_uint(ref.creation, 1 << 32, 'reference creation'))
            + struct.pack('>%dI' % len(words), *words))


def _enc_port(port):
    return (b'\x78' + _enc_node(port.node, 'port node')
            + _V4_PORT_TAIL.pack(_enc_uint(port.id, 1 << 64, 'port id'), _enc_uint(port.creation, 1 << 32, 'port creation')))


def _enc_export(export):
    return (b'\x71' + _enc_node(export.module, 'export module') + _enc_node(export.function, 'export function')
            + bytes((SMALL_INTEGER_EXT, _enc_uint(export.arity, 256, 'export arity'))))


def _enc_fun(fun, depth):
    if not isinstance(fun.uniq, bytes) or len(fun.uniq) != 16:
        raise TermError('fun uniq must be 16 bytes, got %r' % (fun.uniq,))
    if not isinstance(fun.pid, Pid):
        raise TermError('fun pid must be a Pid, got %r' % (fun.pid,))
    for field in (fun.old_index, fun.old_uniq):
        if type(field) is not int or not -0x80000000 <= field <= 0x7FFFFFFF:
            raise TermError('fun old_index/old_uniq must be 32-bit integers, got %r' % (field,))
    free_vars = tuple(fun.free_vars)
    tail = b''.join([_enc_node(fun.module, 'fun module'), _enc_int(fun.old_index), _enc_int(fun.old_uniq),
                     _enc_pid(fun.pid)] + [_encode_body(var, depth + 1) for var in free_vars])
    size = 29 + len(tail)
    return (b'\x70' + _FUN_HEAD.pack(size, _enc_uint(fun.arity, 256, 'fun arity'), fun.uniq,
                                     _enc_uint(fun.index, 1 << 32, 'fun index'), len(free_vars)) + tail)


def _enc_bit_binary(value):
    data = bytes(value.data)
    bits = value.bits
    if type(bits) is not int or not 1 <= bits <= 8 or not data:
        raise TermError('BitBinary needs non-empty data and bits in 1..8, got %d bytes and bits=%r' % (len(data), bits))
    if bits == 8:
        return b'\x6d' + _UINT32.pack(len(data)) + data
    last = data[-1] & (0xFF << (8 - bits)) & 0xFF
    return b'\x4d' + _UINT32.pack(len(data)) + bytes((bits,)) + data[:-1] + bytes((last,))


def _is_byte_list(items):
    for item in items:
        if type(item) is not int or not 0 <= item <= 255:
            return False
    return True


def _encode_body(term, depth=0):
    """Encode without the version byte. Iterative: a work stack of (term, depth)."""
    out = []
    append = out.append
    work = [(term, depth)]
    pop = work.pop
    push = work.append
    while work:
        term, depth = pop()
        kind = type(term)
        if term is _NIL_MARK:
            append(b'\x6a')
        elif kind is int:
            append(_enc_int(term))
        elif kind is Atom:
            append(_enc_atom(term))
        elif kind is tuple:
            count = len(term)
            append(bytes((SMALL_TUPLE_EXT, count)) if count < 256 else b'\x69' + _UINT32.pack(count))
            if count:
                depth = _deeper(depth)
                for item in reversed(term):
                    push((item, depth))
        elif kind is list:
            count = len(term)
            if not count:
                append(b'\x6a')
            elif count < 65536 and _is_byte_list(term):
                append(b'\x6b' + _UINT16.pack(count) + bytes(term))
            else:
                append(b'\x6c' + _UINT32.pack(count))
                depth = _deeper(depth)
                push((_NIL_MARK, depth))
                for item in reversed(term):
                    push((item, depth))
        elif kind is bytes:
            append(b'\x6d' + _UINT32.pack(len(term)) + term)
        elif kind is bool:
            append(_ATOM_TRUE if term else _ATOM_FALSE)
        elif kind is str:
            raw = term.encode('utf-8')
            append(b'\x6d' + _UINT32.pack(len(raw)) + raw)
        elif kind is float:
            append(_enc_float(term))
        elif kind is dict or kind is ErlMap:
            pairs = list(term.items()) if kind is dict else list(term)
            append(b'\x74' + _UINT32.pack(len(pairs)))
            if pairs:
                depth = _deeper(depth)
                for key, value in reversed(pairs):
                    push((value, depth))
                    push((key, depth))
        elif term is None:
            append(_ATOM_UNDEFINED)
        elif kind is Pid:
            append(_enc_pid(term))
        elif kind is Reference:
            append(_enc_reference(term))
        elif kind is Port:
            append(_enc_port(term))
        elif kind is ImproperList:
            elements = tuple(term.elements)
            tail = term.tail
            if isinstance(tail, list):
                push((list(elements) + list(tail), depth))
                continue
            if not elements:
                raise TermError('ImproperList needs at least one element; use the tail itself')
            if isinstance(tail, ImproperList):
                push((ImproperList(elements + tuple(tail.elements), tail.tail), depth))
                continue
            append(b'\x6c' + _UINT32.pack(len(elements)))
            depth = _deeper(depth)
            push((tail, depth))
            for item in reversed(elements):
                push((item, depth))
        elif kind is BitBinary:
            append(_enc_bit_binary(term))
        elif kind is Export:
            append(_enc_export(term))
        elif kind is Fun:
            append(_enc_fun(term, _deeper(depth)))
        else:
            push((_coerce(term), depth))
    return b''.join(out)


def _deeper(depth):
    depth += 1
    if depth > MAX_DEPTH:
        raise TermError('term nests deeper than %d levels (a cycle?)' % MAX_DEPTH)
    return depth


# Tried in this order: Atom before str, bool before int, our named tuples before tuple.
_PLAIN_BASES = (Atom, bool, int, float, bytes, str, list, dict)
_TUPLE_BASES = (ErlMap, Pid, Reference, Port, ImproperList, BitBinary, Export, Fun, tuple)


def _coerce(term):
    """An instance of a subclass (IntEnum, OrderedDict, a subclass of Pid...) as its base type."""
    if isinstance(term, (bytearray, memoryview)):
        return bytes(term)
    for base in _PLAIN_BASES:
        if isinstance(term, base):
            return base(term)
    for base in _TUPLE_BASES:
        if isinstance(term, base):
            return _new_tuple(base, term)
    raise TermError('%s has no Erlang term form: %r' % (type(term).__name__, term))


def encode(term, compressed=False):
    """term_to_binary: the external format of a Python value, starting with the version byte 131.

    compressed: False, True (zlib level 6, as Erlang's [compressed]) or a level 0..9. As in Erlang, the
    compressed form is used only when it is smaller.
    """
    body = _encode_body(term)
    if compressed is False or compressed is None:
        return b'\x83' + body
    level = 6 if compressed is True else compressed
    if type(level) is not int or not 0 <= level <= 9:
        raise TermError('compressed must be a bool or a zlib level 0..9, got %r' % (compressed,))
    if level:
        import zlib  # only compressing callers load it
        packed = zlib.compress(body, level)
        if len(packed) + 4 < len(body):
            return b'\x83\x50' + _UINT32.pack(len(body)) + packed
    return b'\x83' + body
