defmodule Cluster.Strategy do
  @moduledoc """
  The strategy behaviour and the connect/disconnect helpers every strategy uses.

  Same contract as libcluster 3.5: a strategy is started with `[%Cluster.Strategy.State{}]`;
  `connect_nodes/4` and `disconnect_nodes/4` call the topology's `connect`/`disconnect` MFA with
  the node appended, skip nodes that `list_nodes` says are (dis)connected already, and return
  `:ok` or `{:error, [{node, reason}]}`.
  """
  alias Cluster.Logger, as: Log

  @callback start_link([Cluster.Strategy.State.t()]) :: GenServer.on_start() | :ignore

  defmacro __using__(_) do
    quote do
      @behaviour Cluster.Strategy

      def child_spec(args) do
        %{id: __MODULE__, type: :worker, start: {__MODULE__, :start_link, [args]}}
      end

      defoverridable child_spec: 1
    end
  end

  def connect_nodes(topology, {mod, fun, args}, list_nodes, nodes) when is_list(nodes) do
    known = MapSet.new(current_nodes(list_nodes))

    nodes
    |> Enum.uniq()
    |> Enum.reject(&(&1 == node() or MapSet.member?(known, &1)))
    |> Enum.reduce([], fn n, bad ->
      case apply(mod, fun, args ++ [n]) do
        true ->
          Log.info(topology, "connected to #{inspect(n)}")
          bad

        :ignored ->
          Log.warn(topology, "unable to connect to #{inspect(n)}: not part of network")
          [{n, :ignored} | bad]

        other ->
          Log.warn(topology, "unable to connect to #{inspect(n)}")
          [{n, other} | bad]
      end
    end)
    |> result()
  end

  def disconnect_nodes(topology, {mod, fun, args}, list_nodes, nodes) when is_list(nodes) do
    known = MapSet.new(current_nodes(list_nodes))

    nodes
    |> Enum.uniq()
    |> Enum.filter(&(&1 != node() and MapSet.member?(known, &1)))
    |> Enum.reduce([], fn n, bad ->
      case apply(mod, fun, args ++ [n]) do
        true ->
          Log.info(topology, "disconnected from #{inspect(n)}")
          bad

        false ->
          Log.warn(topology, "disconnect from #{inspect(n)} failed because we're already disconnected")
          bad

        :ignored ->
          Log.warn(topology, "disconnect from #{inspect(n)} failed because it is not part of the network")
          bad

        reason ->
          Log.warn(topology, "disconnect from #{inspect(n)} failed with: #{inspect(reason)}")
          [{n, reason} | bad]
      end
    end)
    |> result()
  end

  defp current_nodes({mod, fun, args}), do: apply(mod, fun, args)

  defp result([]), do: :ok
  defp result(bad), do: {:error, Enum.reverse(bad)}

  @doc false
  # One polling round, as libcluster 3.5's polling strategies do it: disconnect the nodes of the
  # previous round that left the list, then connect EVERY node of the list (connect_nodes/4 skips
  # those already connected). Connecting only the nodes new to the list would never redial a peer
  # that is still listed but whose connection was lost (a partition, a peer's restart between polls),
  # so such a cluster would never heal. Failed disconnects stay in the set; failed connects leave it.
  def poll_round(%Cluster.Strategy.State{} = state, found) do
    previous = state.meta || MapSet.new()
    found = MapSet.new(found)
    removed = MapSet.difference(previous, found) |> MapSet.to_list()

    found =
      case disconnect_nodes(state.topology, state.disconnect, state.list_nodes, removed) do
        :ok -> found
        {:error, bad} -> Enum.reduce(bad, found, fn {n, _}, acc -> MapSet.put(acc, n) end)
      end

    found =
      case connect_nodes(state.topology, state.connect, state.list_nodes, MapSet.to_list(found)) do
        :ok -> found
        {:error, bad} -> Enum.reduce(bad, found, fn {n, _}, acc -> MapSet.delete(acc, n) end)
      end

    %{state | meta: found}
  end
end
