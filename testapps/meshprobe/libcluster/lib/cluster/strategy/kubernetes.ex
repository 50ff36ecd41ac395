defmodule Cluster.Strategy.Kubernetes do
  @moduledoc """
  Asks the Kubernetes API for the Endpoints (or Pods) that match a label selector and connects to a
  node for each address, every round, as libcluster 3.5's Kubernetes strategy does.

  Config (libcluster's keys and defaults):

    * `kubernetes_node_basename`, `kubernetes_selector`: required (a missing key crashes the
      strategy, a `nil` one logs a warning and finds nothing);
    * `kubernetes_ip_lookup_mode`: `:endpoints` (default; `subsets[].addresses[]`, the ready
      addresses only) or `:pods` (every matching pod with a `status.podIP`, whatever its phase);
    * `mode`: `:ip` (default) `base@<ip>`, `:dns` `base@<a-b-c-d>.<ns>.pod.<cluster_name>.local`,
      `:hostname` `base@<hostname>.<kubernetes_service_name>.<ns>.svc.<cluster_name>.local`;
    * `kubernetes_namespace`: default the service account's `namespace` file (trimmed; `""` without one);
    * `kubernetes_service_name` (for `:hostname`), `kubernetes_cluster_name` (`"cluster"`);
    * `kubernetes_master` (`"kubernetes.default.svc"`): `.<CLUSTER_DOMAIN>` is appended unless it
      already ends with that or with a dot; `CLUSTER_DOMAIN` (environment) defaults to
      `<cluster_name>.local` and is used for the API host only, never in node names;
    * `kubernetes_service_account_path` (`/var/run/secrets/kubernetes.io/serviceaccount`): `token`
      is read again for every request (rotating tokens work; no file: an empty token); with a
      `ca.crt` there the server is verified against it (`verify_peer`), without one not at all;
    * `kubernetes_use_cached_resources` (false): true adds `resourceVersion=0`;
    * `polling_interval` (5000 ms).

  `GET https://<master>/api/v1/namespaces/<ns>/<endpoints|pods>?labelSelector=<RFC 3986-encoded>`
  with `:httpc` (15 s timeout). A 200 answer gives the node list; 403 logs a warning and gives an
  empty list, so every node of the previous round is disconnected; any other status or a transport
  error keeps the previous round's set. Like libcluster, a 200 answer that is not JSON, a 403 answer
  without a Status message, or an Endpoints address without `targetRef.namespace` crashes the strategy.
  """
  use Cluster.Strategy.Polling, first_poll: :init

  @service_account_path "/var/run/secrets/kubernetes.io/serviceaccount"

  @impl Cluster.Strategy.Polling
  def nodes(%State{config: config, topology: topology} = state) do
    basename = Keyword.fetch!(config, :kubernetes_node_basename)
    selector = Keyword.fetch!(config, :kubernetes_selector)

    cond do
      basename == nil ->
        Cluster.Logger.warn(topology, "kubernetes strategy is selected, but :kubernetes_node_basename is not configured!")
        []

      selector == nil ->
        Cluster.Logger.warn(topology, "kubernetes strategy is selected, but :kubernetes_selector is not configured!")
        []

      true ->
        query(state, basename, selector)
    end
  end

  defp query(%State{config: config, topology: topology, meta: previous}, basename, selector) do
    sa_path = Keyword.get(config, :kubernetes_service_account_path, @service_account_path)
    namespace = Keyword.get(config, :kubernetes_namespace) || read_trimmed(Path.join(sa_path, "namespace"))
    cluster_name = Keyword.get(config, :kubernetes_cluster_name, "cluster")
    lookup = Keyword.get(config, :kubernetes_ip_lookup_mode, :endpoints)

    resource =
      case lookup do
        :endpoints -> "endpoints"
        :pods -> "pods"
        other -> raise ArgumentError, "libcluster topology #{inspect(topology)}: kubernetes_ip_lookup_mode must be :endpoints or :pods, got: #{inspect(other)}"
      end

    params = [labelSelector: selector]
    params = if Keyword.get(config, :kubernetes_use_cached_resources, false), do: [{:resourceVersion, 0} | params], else: params
    path = "api/v1/namespaces/#{namespace}/#{resource}?#{URI.encode_query(params, :rfc3986)}"
    url = String.to_charlist("https://#{api_host(config, cluster_name)}/#{path}")
    headers = [{'authorization', String.to_charlist("Bearer " <> read_trimmed(Path.join(sa_path, "token")))}]

    case :httpc.request(:get, {url, headers}, [ssl: ssl_options(sa_path), timeout: 15_000], []) do
      {:ok, {{_version, 200, _reason}, _headers, body}} ->
        found =
          body
          |> Cluster.JSON.decode!()
          |> addresses(lookup)
          |> Enum.map(&node_name(Keyword.get(config, :mode, :ip), &1, basename, cluster_name, config))

        Cluster.Logger.debug(topology, "kubernetes listed #{length(found)} #{resource} addresses: #{inspect(found)}")
        found

      {:ok, {{_version, 403, _reason}, _headers, body}} ->
        case Cluster.JSON.decode!(body) do
          %{"message" => message} ->
            Cluster.Logger.warn(topology, "cannot query kubernetes (unauthorized): #{message}")
            []

          other ->
            raise "libcluster topology #{inspect(topology)}: kubernetes answered 403 without a Status message: #{inspect(other)}"
        end

      {:ok, {{_version, code, reason}, _headers, body}} ->
        Cluster.Logger.warn(topology, "cannot query kubernetes (#{code} #{reason}): #{inspect(body)}")
        MapSet.to_list(previous)

      {:error, reason} ->
        Cluster.Logger.error(topology, "request to kubernetes failed!: #{inspect(reason)}")
        MapSet.to_list(previous)
    end
  end

  # The API server's name: kubernetes_master, completed with the cluster domain unless it already
  # ends with it or ends with a dot (a name marked as final).
  defp api_host(config, cluster_name) do
    master = Keyword.get(config, :kubernetes_master, "kubernetes.default.svc")
    domain = System.get_env("CLUSTER_DOMAIN", "#{cluster_name}.local")

    if String.ends_with?(master, domain) or String.ends_with?(master, "."),
      do: master,
      else: master <> "." <> domain
  end

  defp read_trimmed(path) do
    if File.exists?(path), do: path |> File.read!() |> String.trim(), else: ""
  end

  defp ssl_options(sa_path) do
    ca = Path.join(sa_path, "ca.crt")
    if File.exists?(ca), do: [verify: :verify_peer, cacertfile: String.to_charlist(ca)], else: [verify: :verify_none]
  end

  # Endpoints: the ready addresses of every subset (notReadyAddresses are never used). An address
  # must carry targetRef.namespace, as libcluster's pattern requires.
  defp addresses(%{"items" => items}, :endpoints) when is_list(items) do
    for %{"subsets" => subsets} when is_list(subsets) <- items,
        %{"addresses" => addresses} when is_list(addresses) <- subsets,
        address <- addresses do
      case address do
        %{"ip" => ip, "targetRef" => %{"namespace" => namespace}} ->
          %{ip: ip, namespace: namespace, hostname: address["hostname"]}

        other ->
          raise "kubernetes Endpoints address without ip and targetRef.namespace: #{inspect(other)}"
      end
    end
  end

  # Pods: every pod that has a podIP, in any phase (Pending with an IP, Terminating, not Ready).
  defp addresses(%{"items" => items}, :pods) when is_list(items) do
    for %{"status" => %{"podIP" => ip}, "metadata" => %{"namespace" => namespace}, "spec" => spec} <- items do
      %{ip: ip, namespace: namespace, hostname: spec["hostname"]}
    end
  end

  defp addresses(_answer, _lookup), do: []

  defp node_name(:ip, %{ip: ip}, basename, _cluster_name, _config), do: :"#{basename}@#{ip}"

  defp node_name(:dns, %{ip: ip, namespace: namespace}, basename, cluster_name, _config) do
    :"#{basename}@#{String.replace(ip, ".", "-")}.#{namespace}.pod.#{cluster_name}.local"
  end

  # A missing hostname or service name leaves an empty label, as in libcluster.
  defp node_name(:hostname, %{hostname: hostname, namespace: namespace}, basename, cluster_name, config) do
    service = Keyword.get(config, :kubernetes_service_name)
    :"#{basename}@#{hostname}.#{service}.#{namespace}.svc.#{cluster_name}.local"
  end

  defp node_name(mode, _address, _basename, _cluster_name, _config) do
    raise ArgumentError, "libcluster Kubernetes strategy: mode must be :ip, :dns or :hostname, got: #{inspect(mode)}"
  end
end
