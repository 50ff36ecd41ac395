defmodule Meshprobe.HTTP do
  @moduledoc """
  The HTTP endpoints, served by `:inets` httpd (this module is its request callback):

    * `GET /health`  200 `ok` once the application has started; 500 in a release whose version
      ends in `-broken` (built to test health-gated rollbacks)
    * `GET /ready`   200 once connected to the expected number of peers, else 503
    * `GET /members` `node()` and `Node.list()`, sorted, one per line
    * `GET /info`    version, node, expected peers, whether `config/runtime.exs` ran, the value of
      the build-time key `set_at_build`, topology names

  Port: `MESHPROBE_HTTP_PORT` or app env `:meshprobe, :http_port` (4000). Bind address:
  `MESHPROBE_HTTP_IP` or `:meshprobe, :http_ip` ({0,0,0,0}).
  """
  require Record
  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  def start do
    port = env_or_app("MESHPROBE_HTTP_PORT", :http_port, 4000, &Meshprobe.parse_integer!(&1, "MESHPROBE_HTTP_PORT", 1..65535))
    ip = env_or_app("MESHPROBE_HTTP_IP", :http_ip, {0, 0, 0, 0}, &parse_ip!/1)
    root = to_charlist(Application.app_dir(:meshprobe))

    config = [
      port: port,
      bind_address: ip,
      server_name: 'meshprobe',
      server_root: root,
      document_root: root,
      modules: [__MODULE__]
    ]

    case :inets.start(:httpd, config) do
      {:ok, pid} ->
        require Logger
        Logger.info("meshprobe http listening on #{:inet.ntoa(ip)}:#{port}")
        {:ok, pid}

      {:error, reason} ->
        {:error, {:http_listen_failed, :inet.ntoa(ip), port, reason}}
    end
  end

  # httpd callback: answer every request here.
  def unquote(:do)(request) do
    path = request |> mod(:request_uri) |> to_string() |> String.split("?") |> hd()
    {code, body} = route(mod(request, :method), path)
    body = IO.iodata_to_binary(body)
    head = [code: code, content_type: 'text/plain', content_length: Integer.to_charlist(byte_size(body))]
    {:proceed, [response: {:response, head, to_charlist(body)}]}
  end

  defp route(method, path) when method in ['GET', 'HEAD'] do
    case path do
      "/health" ->
        if broken?(), do: {500, "broken #{Meshprobe.version()}\n"}, else: {200, "ok #{Meshprobe.version()}\n"}

      "/ready" ->
        peers = length(Node.list())
        expected = Meshprobe.Membership.expected_peers()
        code = if Meshprobe.Membership.ready?(), do: 200, else: 503
        {code, "peers #{peers} expected #{expected}\n"}

      "/members" ->
        {200, Enum.map(Meshprobe.Membership.members(), &[Atom.to_string(&1), "\n"])}

      "/info" ->
        topologies = Application.get_env(:libcluster, :topologies, [])

        {200,
         [
           "version #{Meshprobe.version()}\n",
           "node #{node()}\n",
           "expected_peers #{Meshprobe.Membership.expected_peers()}\n",
           "runtime_exs_loaded #{Application.get_env(:meshprobe, :runtime_exs_loaded, false)}\n",
           "set_at_build #{Application.get_env(:meshprobe, :set_at_build)}\n",
           "topologies #{Enum.map_join(topologies, " ", fn {name, spec} -> "#{name}:#{inspect(spec[:strategy])}" end)}\n"
         ]}

      _ ->
        {404, "not found\n"}
    end
  end

  defp route(_method, _path), do: {405, "method not allowed\n"}

  defp broken?, do: String.ends_with?(Meshprobe.version(), "-broken")

  defp env_or_app(var, key, default, parse) do
    case System.get_env(var) do
      nil -> Application.get_env(:meshprobe, key, default)
      text -> parse.(String.trim(text))
    end
  end

  defp parse_ip!(text) do
    case :inet.parse_address(String.to_charlist(text)) do
      {:ok, ip} -> ip
      _ -> raise ArgumentError, "MESHPROBE_HTTP_IP=#{inspect(text)} is not an IP address"
    end
  end
end
