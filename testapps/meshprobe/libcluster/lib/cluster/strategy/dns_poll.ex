defmodule Cluster.Strategy.DNSPoll do
  @moduledoc """
  Polls DNS and connects to `<node_basename>@<ip>` for every A and AAAA answer of `query`,
  disconnecting nodes whose address left the answer.

  Config: `query` and `node_basename` (required, strings), `polling_interval` (5000 ms; note
  the key is `polling_interval`, not `poll_interval`), `resolver` (a 1-arity function from the
  query charlist to a list of IP tuples; default `:inet_res.lookup/3` for A and AAAA).
  """
  use Cluster.Strategy.Polling

  @impl Cluster.Strategy.Polling
  def nodes(%State{config: config, topology: topology}) do
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
