defmodule Cluster.Strategy.Kubernetes.DNS do
  @moduledoc """
  Resolves a headless Service's A records and connects to `<application_name>@<ip>` for each.

  Config: `service` and `application_name` (required, strings), `polling_interval` (5000 ms),
  `resolver` (1-arity function from the name charlist to `:inet_res.getbyname/2`'s answer;
  default `&:inet_res.getbyname(&1, :a)`).
  """
  use Cluster.Strategy.Polling

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
          {:ok, {:hostent, _name, _aliases, :inet, _len, addresses}} ->
            addresses |> Enum.map(&:"#{app_name}@#{:inet.ntoa(&1)}") |> Enum.reject(&(&1 == node()))

          {:error, reason} ->
            Cluster.Logger.error(topology, "lookup against #{service} failed: #{inspect(reason)}")
            []
        end
    end
  end
end
