%% @doc Logs every change of the visible membership and answers whether the node is ready.
-module(erlprobe_membership).
-behaviour(gen_server).
-export([start_link/0, members/0, expected_peers/0, ready/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

members() ->
    lists:sort([node() | nodes()]).

expected_peers() ->
    case application:get_env(erlprobe, expected_peers, default) of
        N when is_integer(N) -> N;
        default -> length(lists:usort(application:get_env(erlprobe, peers, [])) -- [node()])
    end.

ready() ->
    length(nodes()) >= expected_peers().

init([]) ->
    ok = net_kernel:monitor_nodes(true, [{node_type, visible}, nodedown_reason]),
    logger:info("membership: start; ~s", [summary()]),
    {ok, nostate}.

handle_info({nodeup, Node, _Info}, State) ->
    logger:info("membership: nodeup ~s; ~s", [Node, summary()]),
    {noreply, State};
handle_info({nodedown, Node, Info}, State) ->
    logger:info("membership: nodedown ~s (~p); ~s",
                [Node, proplists:get_value(nodedown_reason, Info), summary()]),
    {noreply, State};
handle_info(_Other, State) ->
    {noreply, State}.

handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Request, State) ->
    {noreply, State}.

summary() ->
    Members = members(),
    io_lib:format("members (~b): ~s", [length(Members), lists:join(" ", [atom_to_list(N) || N <- Members])]).
