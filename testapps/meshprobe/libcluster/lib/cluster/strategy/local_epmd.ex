defmodule Cluster.Strategy.LocalEpmd do
  @moduledoc """
  Connects once, at start, to every node registered in the EPMD on `localhost`, named
  `<name>@<this node's host>`; it never retries and never disconnects (libcluster 3.5 has no
  `timeout` for it).

  As in libcluster, an EPMD that does not answer (a node started with `-start_epmd false`) makes
  the strategy fail to start, and with it the application.
  """
  use Cluster.Strategy
  alias Cluster.Strategy.State

  @impl Cluster.Strategy
  def start_link([%State{} = state]) do
    host = node() |> Atom.to_string() |> String.split("@") |> List.last()

    nodes =
      case :erl_epmd.names(:localhost) do
        {:ok, names} ->
          Enum.map(names, fn {name, _port} -> :"#{name}@#{host}" end)

        {:error, reason} ->
          raise "libcluster topology #{inspect(state.topology)}: LocalEpmd cannot list the nodes " <>
                  "of the EPMD on localhost: #{inspect(reason)}"
      end

    Cluster.Strategy.connect_nodes(state.topology, state.connect, state.list_nodes, nodes)
    :ignore
  end
end
