defmodule Cluster.Strategy.Kubernetes.DNS do
  @moduledoc """
  Resolves a headless Service's A records and connects to `<application_name>@<ip>` for each,
  every round.

  Config: `service` and `application_name` (required, strings), `polling_interval` (5000 ms),
  `resolver` (1-arity function from the name charlist to `:inet_res.getbyname/2`'s answer;
  default `&:inet_res.getbyname(&1, :a)`).

  As in libcluster 3.5, only an IPv4 answer without aliases is understood: an answer through a
  CNAME (an ExternalName Service) or an IPv6 one crashes the strategy (a `CaseClauseError`).
  """
  use Cluster.Strategy.Polling, first_poll: :init

  @impl Cluster.Strategy.Polling
  def nodes(%State{config: config, topology: topology}) do
    app_name = Keyword.fetch!(config, :application_name)
    service = Keyword.fetch!(config, :service)
    resolver = Keyword.get(config, :resolver, &:inet_res.getbyname(&1, :a))

    cond do
      app_name == nil ->
        Cluster.Logger.warn(topology, "kubernetes.DNS strategy is selected, but :application_name is not configured!")
        []

      service == nil ->
        Cluster.Logger.warn(topology, "kubernetes strategy is selected, but :service is not configured!")
        []

      true ->
        case resolver.(to_charlist(service)) do
          {:ok, {:hostent, _name, [], :inet, _len, addresses}} ->
            found = addresses |> Enum.map(&:"#{app_name}@#{:inet.ntoa(&1)}") |> Enum.reject(&(&1 == node()))
            Cluster.Logger.debug(topology, "resolved #{service}: #{inspect(found)}")
            found

          {:error, reason} ->
            Cluster.Logger.error(topology, "lookup against #{service} failed: #{inspect(reason)}")
            []
        end
    end
  end
end
