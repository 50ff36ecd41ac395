defmodule Meshprobe.Application do
  @moduledoc """
  meshprobe: a test release that forms an Erlang cluster the way an application using libcluster does.

  The topology is read from the application environment when the application starts (not at
  compile time), so it can come from sys.config, `config/runtime.exs` or an extra `-config FILE`
  passed in `ERL_ZFLAGS`, without rebuilding the release.
  """
  use Application
  require Logger

  @impl true
  def start(_type, _args) do
    topologies = Application.get_env(:libcluster, :topologies, [])

    Logger.info(
      "meshprobe #{Meshprobe.version()} starting as #{node()}; topologies: " <>
        inspect(for {name, spec} <- topologies, do: {name, spec[:strategy]})
    )

    children = [
      Meshprobe.Membership,
      # The one line a real application using libcluster has in its tree:
      {Cluster.Supervisor, [topologies, [name: Meshprobe.ClusterSupervisor]]}
    ]

    with {:ok, sup} <- Supervisor.start_link(children, strategy: :one_for_one, name: Meshprobe.Supervisor),
         {:ok, httpd} <- Meshprobe.HTTP.start() do
      {:ok, sup, httpd}
    end
  end

  @impl true
  def prep_stop(httpd) do
    Logger.info("meshprobe stopping")
    :inets.stop(:httpd, httpd)
    httpd
  end
end
