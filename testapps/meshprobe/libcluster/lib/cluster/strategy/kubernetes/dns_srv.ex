defmodule Cluster.Strategy.Kubernetes.DNSSRV do
  @moduledoc """
  Resolves the SRV records of a StatefulSet's headless Service and connects to
  `<application_name>@<SRV target>` for each, every round, e.g.
  `app@app-0.app-headless.default.svc.cluster.local`.

  The name queried is `<service>.<namespace>.svc.<CLUSTER_DOMAIN>` where the environment variable
  `CLUSTER_DOMAIN` defaults to `cluster.local.`.
  Config: `service`, `application_name`, `namespace` (required, strings), `polling_interval`
  (5000 ms), `resolver` (default `&:inet_res.getbyname(&1, :srv)`).
  """
  use Cluster.Strategy.Polling

  @impl Cluster.Strategy.Polling
  def nodes(%State{config: config, topology: topology}) do
    app_name = Keyword.fetch!(config, :application_name)
    service = Keyword.fetch!(config, :service)
    namespace = Keyword.fetch!(config, :namespace)
    domain = System.get_env("CLUSTER_DOMAIN", "cluster.local.")
    name = to_charlist("#{service}.#{namespace}.svc.#{domain}")
    resolver = Keyword.get(config, :resolver, &:inet_res.getbyname(&1, :srv))

    case resolver.(name) do
      {:ok, {:hostent, _name, _aliases, :srv, _count, records}} ->
        found =
          records
          |> Enum.map(fn {_prio, _weight, _port, target} -> :"#{app_name}@#{target}" end)
          |> Enum.reject(&(&1 == node()))

        Cluster.Logger.debug(topology, "resolved #{name}: #{inspect(found)}")
        found

      {:error, reason} ->
        Cluster.Logger.error(topology, "#{inspect(name)} : lookup against #{service} failed: #{inspect(reason)}")
        []
    end
  end
end
