defmodule Cluster.Strategy.DNSPoll do
  @moduledoc """
  Polls DNS and connects to `<node_basename>@<ip>` for every A and AAAA answer of `query`,
  disconnecting nodes whose address left the answer.

  Config: `query` and `node_basename` (required, strings), `polling_interval` (5000 ms; note
  the key is `polling_interval`, not `poll_interval`), `resolver` (a 1-arity function from the
  query charlist to a list of IP tuples; default `:inet_res.lookup/3` for A and AAAA).
  """
  use GenServer
  use Cluster.Strategy
  alias Cluster.Strategy.State

  @impl Cluster.Strategy
  def start_link([%State{} = state]), do: GenServer.start_link(__MODULE__, state)

  @impl true
  def init(state), do: {:ok, %{state | meta: MapSet.new()}, {:continue, :poll}}

  @impl true
  def handle_continue(:poll, state), do: {:noreply, poll(state)}

  @impl true
  def handle_info(:poll, state), do: {:noreply, poll(state)}
  def handle_info(_, state), do: {:noreply, state}

  defp poll(%State{config: config} = state) do
    state = Cluster.Strategy.poll_round(state, nodes(state))
    Process.send_after(self(), :poll, Keyword.get(config, :polling_interval, 5_000))
    state
  end

  defp nodes(%State{config: config, topology: topology}) do
    query = Keyword.get(config, :query)
    basename = Keyword.get(config, :node_basename)
    resolver = Keyword.get(config, :resolver, &default_resolver/1)

    if is_binary(query) and query != "" and is_binary(basename) and basename != "" do
      found =
        query
        |> String.to_charlist()
        |> resolver.()
        |> Enum.map(&:"#{basename}@#{:inet.ntoa(&1)}")
        |> Enum.reject(&(&1 == node()))

      Cluster.Logger.debug(topology, "polling dns for '#{query}': #{inspect(found)}")
      found
    else
      Cluster.Logger.warn(
        topology,
        "dns polling strategy is selected, but query or node_basename is missing or not a string: " <>
          inspect(%{query: query, node_basename: basename})
      )

      []
    end
  end

  defp default_resolver(query), do: :inet_res.lookup(query, :in, :a) ++ :inet_res.lookup(query, :in, :aaaa)
end
