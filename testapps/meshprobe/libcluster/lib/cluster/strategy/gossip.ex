defmodule Cluster.Strategy.Gossip do
  @moduledoc """
  UDP heartbeats carrying the sender's node name; every node that hears one connects to the sender.

  Config (libcluster 3.5 keys and defaults): `port` (45892), `if_addr` ("0.0.0.0"),
  `multicast_addr` ("233.252.1.32"), `multicast_ttl` (1), `multicast_if` (unset: the kernel's
  choice), `secret` (nil: plain heartbeats), `broadcast_only` (false; then `multicast_addr`
  should be a broadcast address such as "255.255.255.255" or a subnet's broadcast address).

  Wire format, byte for byte the one libcluster uses so both interoperate:
  plain `"heartbeat::" <> :erlang.term_to_binary(%{node: node()})`; with a secret, 16 random IV
  bytes followed by AES-256-CBC (key = SHA-256 of the secret, PKCS#7 padding) of that plaintext.
  Addresses may be tuples or strings (binaries); the secret must be a binary.
  """
  use GenServer
  use Cluster.Strategy
  alias Cluster.Strategy.State
  alias Cluster.Logger, as: Log

  @default_port 45892
  @default_if_addr {0, 0, 0, 0}
  @default_multicast_addr {233, 252, 1, 32}
  @prefix "heartbeat::"

  @impl Cluster.Strategy
  def start_link([%State{} = state]), do: GenServer.start_link(__MODULE__, state)

  @impl true
  def init(%State{config: config, topology: topology} = state) do
    port = Keyword.get(config, :port, @default_port)
    if_addr = ip!(topology, :if_addr, Keyword.get(config, :if_addr, @default_if_addr))
    group = ip!(topology, :multicast_addr, Keyword.get(config, :multicast_addr, @default_multicast_addr))
    ttl = Keyword.get(config, :multicast_ttl, 1)
    secret = secret!(topology, Keyword.get(config, :secret))

    sending =
      cond do
        Keyword.get(config, :broadcast_only, false) ->
          []

        (mif = Keyword.get(config, :multicast_if)) != nil ->
          [multicast_if: ip!(topology, :multicast_if, mif), multicast_ttl: ttl, multicast_loop: true]

        true ->
          [multicast_ttl: ttl, multicast_loop: true]
      end

    # Membership on every interface ({0,0,0,0}) even in broadcast_only mode, as libcluster does.
    opts =
      [:binary, active: true, ip: if_addr, reuseaddr: true, broadcast: true, add_membership: {group, {0, 0, 0, 0}}] ++
        sending

    case :gen_udp.open(port, opts) do
      {:ok, socket} ->
        {:ok, %{state | meta: {group, port, socket, secret}}, 0}

      {:error, reason} ->
        {:stop, {:gossip_socket, port, reason}}
    end
  end

  @impl true
  def handle_info(:timeout, state), do: handle_info(:heartbeat, state)

  def handle_info(:heartbeat, %State{meta: {group, port, socket, secret}} = state) do
    Log.debug(state.topology, "heartbeat")
    :gen_udp.send(socket, group, port, packet(secret))
    Process.send_after(self(), :heartbeat, :rand.uniform(5_000))
    {:noreply, state}
  end

  def handle_info({:udp, _socket, _ip, _port, data}, %State{meta: {_, _, _, secret}} = state) do
    case open(secret, data) do
      {:ok, @prefix <> term} -> heard(state, term)
      _ -> :ok
    end

    {:noreply, state}
  end

  def handle_info(_, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, %State{meta: {_, _, socket, _}}), do: :gen_udp.close(socket)
  def terminate(_reason, _state), do: :ok

  defp heard(state, term) do
    # Not :safe: a node name heard for the first time is a new atom (libcluster decodes the same way).
    case :erlang.binary_to_term(term) do
      %{node: n} when is_atom(n) and n != node() ->
        Log.debug(state.topology, "received heartbeat from #{n}")
        Cluster.Strategy.connect_nodes(state.topology, state.connect, state.list_nodes, [n])

      _ ->
        :ok
    end
  rescue
    ArgumentError -> :ok
  end

  defp packet(nil), do: [@prefix, :erlang.term_to_binary(%{node: node()})]

  defp packet(secret) do
    iv = :crypto.strong_rand_bytes(16)
    plain = @prefix <> :erlang.term_to_binary(%{node: node()})
    [iv, :crypto.crypto_one_time(:aes_256_cbc, key(secret), iv, pad(plain), true)]
  end

  defp open(nil, data), do: {:ok, data}

  defp open(secret, <<iv::binary-size(16), cipher::binary>>) when cipher != "" and rem(byte_size(cipher), 16) == 0 do
    unpad(:crypto.crypto_one_time(:aes_256_cbc, key(secret), iv, cipher, false))
  end

  defp open(_secret, _data), do: :error

  defp key(secret), do: :crypto.hash(:sha256, secret)

  defp pad(data) do
    n = 16 - rem(byte_size(data), 16)
    data <> :binary.copy(<<n>>, n)
  end

  defp unpad(data) do
    n = :binary.last(data)
    size = byte_size(data)

    if n in 1..16 and n <= size and binary_part(data, size, -n) == :binary.copy(<<n>>, n) do
      {:ok, binary_part(data, 0, size - n)}
    else
      :error
    end
  end

  defp ip!(_topology, _key, {_, _, _, _} = ip), do: ip

  defp ip!(topology, key, text) when is_binary(text) do
    case :inet.parse_ipv4_address(String.to_charlist(text)) do
      {:ok, ip} -> ip
      _ -> raise ArgumentError, "libcluster topology #{inspect(topology)}: gossip #{key} #{inspect(text)} is not an IPv4 address"
    end
  end

  defp ip!(topology, key, other) do
    raise ArgumentError,
          "libcluster topology #{inspect(topology)}: gossip #{key} must be an IPv4 tuple or a string " <>
            "(in an Erlang .config file write <<\"1.2.3.4\">> or {1,2,3,4}), got: #{inspect(other)}"
  end

  defp secret!(_topology, nil), do: nil
  defp secret!(_topology, secret) when is_binary(secret), do: secret

  defp secret!(topology, _other) do
    raise ArgumentError,
          "libcluster topology #{inspect(topology)}: gossip secret must be a string " <>
            "(in an Erlang .config file write <<\"...\">>, not \"...\")"
  end
end
