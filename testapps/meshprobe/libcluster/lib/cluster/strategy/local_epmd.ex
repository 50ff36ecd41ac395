defmodule Cluster.Strategy.LocalEpmd do
  @moduledoc "Connects once to every node registered in the local EPMD, at this node's host."
  use GenServer
  use Cluster.Strategy
  alias Cluster.Strategy.State

  @impl Cluster.Strategy
  def start_link([%State{} = state]), do: GenServer.start_link(__MODULE__, state)

  @impl true
  def init(state) do
    host = node() |> Atom.to_string() |> String.split("@") |> List.last()

    nodes =
      case :erl_epmd.names() do
        {:ok, names} -> Enum.map(names, fn {name, _port} -> :"#{name}@#{host}" end)
        _ -> []
      end

    Cluster.Strategy.connect_nodes(state.topology, state.connect, state.list_nodes, nodes)
    {:ok, state}
  end
end
