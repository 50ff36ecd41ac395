%% @doc inets httpd callback serving the probe's endpoints:
%% /health 200 once started (500 in a release whose version ends in "-broken"),
%% /ready 200 once connected to the expected number of peers (else 503), /members one node per line.
-module(erlprobe_http).
-export([start/0, do/1]).

-include_lib("inets/include/httpd.hrl").

start() ->
    Port = application:get_env(erlprobe, http_port, 4100),
    Ip = application:get_env(erlprobe, http_ip, {0, 0, 0, 0}),
    Root = code:lib_dir(erlprobe),
    Config = [{port, Port}, {bind_address, Ip}, {server_name, "erlprobe"},
              {server_root, Root}, {document_root, Root}, {modules, [?MODULE]}],
    case inets:start(httpd, Config) of
        {ok, Pid} ->
            logger:info("erlprobe http listening on ~s:~b", [inet:ntoa(Ip), Port]),
            {ok, Pid};
        {error, Reason} ->
            {error, {http_listen_failed, inet:ntoa(Ip), Port, Reason}}
    end.

do(#mod{method = Method, request_uri = Uri}) ->
    [Path | _] = string:split(Uri, "?"),
    {Code, Body0} = route(Method, Path),
    Body = unicode:characters_to_list(Body0),
    Head = [{code, Code}, {content_type, "text/plain"}, {content_length, integer_to_list(length(Body))}],
    {proceed, [{response, {response, Head, Body}}]}.

route(Method, Path) when Method =:= "GET"; Method =:= "HEAD" ->
    Vsn = erlprobe_app:version(),
    case Path of
        "/health" ->
            case lists:suffix("-broken", Vsn) of
                true -> {500, ["broken ", Vsn, "\n"]};
                false -> {200, ["ok ", Vsn, "\n"]}
            end;
        "/ready" ->
            Code = case erlprobe_membership:ready() of true -> 200; false -> 503 end,
            {Code, io_lib:format("peers ~b expected ~b~n", [length(nodes()), erlprobe_membership:expected_peers()])};
        "/members" ->
            {200, [[atom_to_list(N), "\n"] || N <- erlprobe_membership:members()]};
        _ ->
            {404, "not found\n"}
    end;
route(_Method, _Path) ->
    {405, "method not allowed\n"}.
