%% @doc Connects to the peers listed in the app env at start and then every connect_interval ms
%% (infinity: only once). The kernel's sync_nodes_optional covers the boot; this keeps a node that
%% restarted later, or whose peers were down at boot, joining them.
-module(erlprobe_peers).
-behaviour(gen_server).
-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

init([]) ->
    self() ! connect,
    {ok, nostate}.

handle_info(connect, State) ->
    Peers = application:get_env(erlprobe, peers, []),
    Missing = [P || P <- Peers, P =/= node(), not lists:member(P, nodes())],
    lists:foreach(fun connect/1, Missing),
    case application:get_env(erlprobe, connect_interval, 5000) of
        infinity -> ok;
        Ms when is_integer(Ms), Ms > 0 -> erlang:send_after(Ms, self(), connect)
    end,
    {noreply, State};
handle_info(_Other, State) ->
    {noreply, State}.

handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Request, State) ->
    {noreply, State}.

connect(Peer) when is_atom(Peer) ->
    case net_kernel:connect_node(Peer) of
        true -> logger:info("peers: connected to ~s", [Peer]);
        Other -> logger:notice("peers: unable to connect to ~s (~p)", [Peer, Other])
    end;
connect(Bad) ->
    logger:error("peers: ~p is not a node name; erlprobe's peers must be atoms such as 'app@10.0.0.1'", [Bad]).
