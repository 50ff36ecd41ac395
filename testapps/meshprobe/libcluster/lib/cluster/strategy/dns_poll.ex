defmodule Cluster.Strategy.DNSPoll do
  @moduledoc """
  Polls DNS and connects to `<node_basename>@<ip>` for every A and AAAA answer of `query`, each
  round, disconnecting nodes whose address left the answer.

  Config: `query` and `node_basename` (required, strings), `polling_interval` (5000 ms; note
  the key is `polling_interval`, not `poll_interval`), `resolver` (a 1-arity function from the
  query string to a list of IP tuples; default `:inet_res.lookup/3` for A and AAAA).

  As in libcluster 3.5: both keys missing, or either not a non-empty string, logs a warning and
  finds nothing; exactly one of the two missing crashes the strategy (libcluster has no clause for
  it), so the application does not start.
  """
  use Cluster.Strategy.Polling, first_poll: :init

  @impl Cluster.Strategy.Polling
  def nodes(%State{config: config, topology: topology}) do
    resolver = Keyword.get(config, :resolver, &default_resolver/1)

    case {Keyword.fetch(config, :query), Keyword.fetch(config, :node_basename)} do
      {{:ok, query}, {:ok, basename}}
      when is_binary(query) and query != "" and is_binary(basename) and basename != "" ->
        found =
          query
          |> resolver.()
          |> Enum.map(&:"#{basename}@#{:inet.ntoa(&1)}")
          |> Enum.reject(&(&1 == node()))

        Cluster.Logger.debug(topology, "polling dns for '#{query}': #{inspect(found)}")
        found

      {{:ok, query}, {:ok, basename}} ->
        Cluster.Logger.warn(
          topology,
          "dns polling strategy is selected, but query or node_basename is not a non-empty string: " <>
            inspect(%{query: query, node_basename: basename})
        )

        []

      {:error, :error} ->
        Cluster.Logger.warn(topology, "dns polling strategy is selected, but query and node_basename are missing")
        []

      _one_missing ->
        raise ArgumentError,
              "libcluster topology #{inspect(topology)}: DNSPoll needs both query and node_basename " <>
                "(libcluster 3.5 crashes when only one of them is set)"
    end
  end

  defp default_resolver(query) do
    query = String.to_charlist(query)
    :inet_res.lookup(query, :in, :a) ++ :inet_res.lookup(query, :in, :aaaa)
  end
end
