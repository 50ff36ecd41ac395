-module(erlprobe_sup).
-behaviour(supervisor).
-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Children = [#{id => erlprobe_membership, start => {erlprobe_membership, start_link, []}},
                #{id => erlprobe_peers, start => {erlprobe_peers, start_link, []}}],
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, Children}}.
