# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Measurements the nodes make themselves, asked for through ``rex`` by our hidden node: nothing is installed on
them. An Erlang expression is sent as text and run on node A with three RPCs (``erl_scan:string/1``,
``erl_parse:parse_exprs/1``, ``erl_eval:exprs/2``), so that the timing loop runs next to the distribution link it
measures, not across the controller's own connection.

Public API
==========
``RpcClient(cookie, dial=None, epmd_port=4369, dist_port=None, tls=None)``
    One hidden node (``erl_driver.Driver``) for the runner's own calls: ``call(node, module, function, args,
    timeout)`` returns the result or raises ``erl_epmd.DistError`` (``{badrpc, R}`` as ``RpcError``);
    ``evaluate(node, text, timeout)`` runs an Erlang expression sequence on the node and returns its value;
    ``close()``.
``latency(client, node_a, node_b, rate_hz, seconds, call_timeout_ms) -> [ms or None, ...]``
    Open loop: node A fires one ``erpc:call(B, erlang, node, [])`` every 1/rate s at its scheduled time, each in a
    process of its own, whatever the earlier calls are doing; each round trip is timed from its *scheduled* send
    time, so a stall shows as latency of every call that was due during it (no coordinated omission). A call
    that took longer than ``call_timeout_ms`` is None.
``throughput(client, node_a, node_b, seconds, message_bytes, workers, call_timeout_ms) -> dict``
    ``workers`` processes on A send a binary of ``message_bytes`` to B with ``erpc:call(B, erlang, byte_size,
    [Bin])`` back to back for ``seconds``: ``bytes``, ``calls``, ``seconds`` (measured on A), ``mib_s``.
``environment(client, node) -> dict``
    What the node runs: ``otp`` (OTP version, e.g. "25.2.3", from the runtime's OTP_VERSION file, else the major
    release and the ERTS version), ``release`` ("name version" of the boot script), ``net_ticktime_s`` and
    ``net_tickintensity``.
``connect_nodes(client, node, peers)``
    ``net_kernel:connect_node/1`` on ``node`` for each peer: the help a strategy that does not heal by itself needs.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.beamops.cluster.plugins.module_utils import erl_driver
from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import EPMD_DEFAULT_PORT, DistTimeout
from ansible_collections.beamops.cluster.plugins.module_utils.erl_term import Atom

# A session of ours idle for longer than this is dialled anew before it is used (see RpcClient.call).
IDLE_S = 2.0

LATENCY_EXPR = r'''
B = '%(b)s', N = %(n)d, Step = %(step_us)d, T = %(timeout_ms)d, Self = self(),
Start = erlang:monotonic_time(microsecond) + 2000,
Fire = fun Fire(I) when I >= N -> ok;
           Fire(I) ->
             Due = Start + I * Step,
             Wait = (Due - erlang:monotonic_time(microsecond)) div 1000,
             if Wait > 0 -> receive after Wait -> ok end; true -> ok end,
             spawn(fun() ->
                     R = try erpc:call(B, erlang, node, [], T) of
                           _ -> erlang:monotonic_time(microsecond) - Due
                         catch _:_ -> timeout
                         end,
                     Self ! {beamops_rtt, I, R}
                   end),
             Fire(I + 1)
       end,
Fire(0),
Collect = fun Collect(0, Acc) -> Acc;
              Collect(K, Acc) ->
                receive {beamops_rtt, I, R} -> Collect(K - 1, [{I, R} | Acc])
                after T + 5000 -> Acc
                end
          end,
Got = maps:from_list(Collect(N, [])),
[maps:get(I, Got, timeout) || I <- lists:seq(0, N - 1)].
'''

THROUGHPUT_EXPR = r'''
B = '%(b)s', Dur = %(ms)d, Size = %(size)d, W = %(workers)d, T = %(timeout_ms)d, Self = self(),
Bin = binary:copy(<<0>>, Size),
Start = erlang:monotonic_time(microsecond), End = Start + Dur * 1000,
Work = fun Work(Calls) ->
         case erlang:monotonic_time(microsecond) < End of
           true -> Size = erpc:call(B, erlang, byte_size, [Bin], T), Work(Calls + 1);
           false -> Calls
         end
       end,
[spawn(fun() -> Self ! {beamops_tp, try Work(0) catch _:_ -> failed end} end) || _ <- lists:seq(1, W)],
Counts = [receive {beamops_tp, C} -> C after Dur + T + 5000 -> failed end || _ <- lists:seq(1, W)],
Elapsed = erlang:monotonic_time(microsecond) - Start,
{Counts, Elapsed}.
'''

ENVIRONMENT_EXPR = r'''
Root = code:root_dir(), Rel = erlang:system_info(otp_release),
Otp = case file:read_file(filename:join([Root, "releases", Rel, "OTP_VERSION"])) of
        {ok, V} -> string:trim(binary_to_list(V));
        _ -> Rel ++ " (erts " ++ erlang:system_info(version) ++ ")"
      end,
{Name, Vsn} = init:script_id(),
Intensity = case application:get_env(kernel, net_tickintensity) of {ok, I} -> I; _ -> 4 end,
{Otp, Name ++ " " ++ Vsn, net_kernel:get_net_ticktime(), Intensity}.
'''


def _text(value):
    """A charlist (list of ints) or binary from a node as str."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list):
        return "".join(chr(c) for c in value)
    return str(value)


class RpcClient:
    """See the module docstring."""

    def __init__(self, cookie, dial=None, epmd_port=EPMD_DEFAULT_PORT, dist_port=None, tls=None):
        self.driver = erl_driver.Driver(cookie, epmd_port=epmd_port, dist_port=dist_port, tls=tls,
                                        dial=erl_driver.validate_dial(dial), connect_timeout=5.0, tick_timeout=60.0)

    def add_dial(self, dial):
        for node, address in erl_driver.validate_dial(dial).items():
            self.driver.add(node, address)

    def call(self, node, module, function, args, timeout=10.0):
        # The driver runs only inside a call, so a session left idle answered no ticks meanwhile: the node has
        # dropped it (or will), and a fault may have closed it. Such a session is closed and the node dialled anew;
        # a call that still finds its session closed is made once more on a new one.
        link = self.driver.links.get(node)
        if link is not None and link.state == erl_driver.UP and time.monotonic() - (link.last_received or 0) > IDLE_S:
            self.driver.disconnect(node)
        for attempt in (1, 2):
            call = self.driver.call(node, [(module, function, list(args))])
            self.driver.run(until=lambda: call.done, deadline=time.monotonic() + timeout)
            if not call.done:
                self.driver.abandon([call])
            if call.error is not None:
                if attempt == 1 and call.error.reason == "connection_closed":
                    continue
                raise call.error
            if not call.done:
                raise DistTimeout("%s did not answer %s:%s within %.0f s" % (node, module, function, timeout))
            return call.results[0]

    def evaluate(self, node, text, timeout):
        scanned = self.call(node, "erl_scan", "string", [[ord(c) for c in text]])
        if not (isinstance(scanned, tuple) and scanned[0] == "ok"):
            raise ValueError("erl_scan rejected the expression: %r" % (scanned,))
        parsed = self.call(node, "erl_parse", "parse_exprs", [scanned[1]])
        if not (isinstance(parsed, tuple) and parsed[0] == "ok"):
            raise ValueError("erl_parse rejected the expression: %r" % (parsed,))
        value = self.call(node, "erl_eval", "exprs", [parsed[1], []], timeout=timeout)
        if not (isinstance(value, tuple) and value[0] == "value"):
            raise ValueError("erl_eval gave %r" % (value,))
        return value[1]

    def close(self):
        self.driver.close()


def _atom_text(node):
    if "'" in node or "\\" in node:
        raise ValueError("node name %r cannot be quoted as an atom" % node)
    return node


def latency(client, node_a, node_b, rate_hz, seconds, call_timeout_ms):
    n = max(1, int(round(rate_hz * seconds)))
    text = LATENCY_EXPR % {"b": _atom_text(node_b), "n": n, "step_us": int(round(1e6 / rate_hz)),
                           "timeout_ms": int(call_timeout_ms)}
    values = client.evaluate(node_a, text, timeout=seconds + call_timeout_ms / 1000.0 + 30.0)
    return [round(v / 1000.0, 3) if isinstance(v, int) else None for v in values]


def throughput(client, node_a, node_b, seconds, message_bytes, workers, call_timeout_ms):
    text = THROUGHPUT_EXPR % {"b": _atom_text(node_b), "ms": int(seconds * 1000), "size": int(message_bytes),
                              "workers": int(workers), "timeout_ms": int(call_timeout_ms)}
    counts, elapsed_us = client.evaluate(node_a, text, timeout=seconds + call_timeout_ms / 1000.0 + 30.0)
    if any(not isinstance(c, int) for c in counts):
        raise ValueError("a sender on %s failed (a call to %s timed out or the link broke): %r" % (node_a, node_b, counts))
    calls = sum(counts)
    elapsed = elapsed_us / 1e6
    total = calls * int(message_bytes)
    return {"bytes": total, "calls": calls, "seconds": round(elapsed, 3),
            "mib_s": round(total / 1048576.0 / elapsed, 2) if elapsed > 0 else None}


def environment(client, node):
    otp, release, ticktime, intensity = client.evaluate(node, ENVIRONMENT_EXPR, timeout=15.0)
    return {"otp": _text(otp), "release": _text(release), "net_ticktime_s": ticktime, "net_tickintensity": intensity}


def connect_nodes(client, node, peers):
    """{peer: true/false} of net_kernel:connect_node/1 run on node."""
    return dict((peer, client.call(node, "net_kernel", "connect_node", [Atom(peer)]) is True) for peer in peers)
