defmodule Cluster.Supervisor do
  @moduledoc """
  Starts one strategy process per topology, as libcluster's `Cluster.Supervisor` does.

  An application puts exactly this child in its own supervision tree:

      topologies = Application.get_env(:libcluster, :topologies, [])
      {Cluster.Supervisor, [topologies, [name: MyApp.ClusterSupervisor]]}
  """
  use Supervisor

  def child_spec([_topologies, opts] = args) do
    %{id: Keyword.get(opts, :name, __MODULE__), type: :supervisor, start: {__MODULE__, :start_link, [args]}}
  end

  def child_spec([topologies]), do: child_spec([topologies, []])

  def start_link([topologies, opts]) do
    Supervisor.start_link(__MODULE__, topologies, opts)
  end

  def start_link([topologies]), do: start_link([topologies, []])

  @impl true
  def init(topologies) do
    topologies
    |> Enum.map(&strategy_child/1)
    |> Supervisor.init(strategy: :one_for_one)
  end

  defp strategy_child({topology, spec}) when is_atom(topology) and is_list(spec) do
    strategy =
      case Keyword.fetch(spec, :strategy) do
        {:ok, mod} when is_atom(mod) ->
          mod

        _ ->
          raise ArgumentError,
                "libcluster topology #{inspect(topology)}: :strategy is required " <>
                  "(a module such as Cluster.Strategy.Epmd)"
      end

    unless Code.ensure_loaded?(strategy) do
      raise ArgumentError, "libcluster topology #{inspect(topology)}: unknown strategy #{inspect(strategy)}"
    end

    defaults = %Cluster.Strategy.State{}

    state = %Cluster.Strategy.State{
      topology: topology,
      connect: Keyword.get(spec, :connect, defaults.connect),
      disconnect: Keyword.get(spec, :disconnect, defaults.disconnect),
      list_nodes: Keyword.get(spec, :list_nodes, defaults.list_nodes),
      config: Keyword.get(spec, :config, [])
    }

    spec
    |> Keyword.get(:child_spec, [])
    |> Enum.into(strategy.child_spec([state]))
    |> Map.put(:id, topology)
  end

  defp strategy_child(other) do
    raise ArgumentError,
          "libcluster topologies must be a keyword list of name: [strategy: ..., config: [...]], got: #{inspect(other)}"
  end
end
