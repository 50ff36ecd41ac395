%% @doc erlprobe: a minimal Erlang release that clusters with the kernel's own means
%% (sync_nodes_optional at boot, then net_kernel:connect_node/1 to the peers in its app env)
%% and serves /health, /ready and /members over inets httpd.
-module(erlprobe_app).
-behaviour(application).
-export([start/2, prep_stop/1, stop/1, version/0]).

start(_Type, _Args) ->
    configure_logging(),
    logger:info("erlprobe ~s starting as ~s; peers: ~p", [version(), node(), peers()]),
    {ok, Sup} = erlprobe_sup:start_link(),
    case erlprobe_http:start() of
        {ok, Httpd} -> {ok, Sup, Httpd};
        {error, Reason} -> {error, Reason}
    end.

prep_stop(Httpd) ->
    logger:info("erlprobe stopping"),
    inets:stop(httpd, Httpd),
    Httpd.

stop(_State) ->
    ok.

version() ->
    {ok, Vsn} = application:get_key(erlprobe, vsn),
    Vsn.

peers() ->
    {ok, Peers} = application:get_env(erlprobe, peers),
    Peers.

%% One line per event with a UTC timestamp, whatever sys.config a deployment brings.
configure_logging() ->
    Level = application:get_env(erlprobe, log_level, info),
    ok = logger:set_primary_config(level, Level),
    %% At info level OTP would also log every supervisor's progress; keep the log to erlprobe's own lines.
    _ = logger:add_primary_filter(no_progress, {fun logger_filters:progress/2, stop}),
    logger:update_formatter_config(default, #{single_line => true, time_offset => "Z",
                                              template => [time, " [", level, "] ", msg, "\n"]}).
