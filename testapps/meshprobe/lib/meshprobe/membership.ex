defmodule Meshprobe.Membership do
  @moduledoc """
  Logs every change of the visible cluster membership (with the logger's UTC timestamps) and
  answers whether this node is ready: connected to at least the expected number of peers.

  The expected number comes from `MESHPROBE_EXPECTED_PEERS` or the app env `:meshprobe,
  :expected_peers` (default 0: ready as soon as started).
  """
  use GenServer
  require Logger

  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  def members, do: Enum.sort([node() | Node.list()])

  def expected_peers do
    case System.get_env("MESHPROBE_EXPECTED_PEERS") do
      nil -> Application.get_env(:meshprobe, :expected_peers, 0)
      text -> Meshprobe.parse_integer!(text, "MESHPROBE_EXPECTED_PEERS", 0..1_000_000)
    end
  end

  def ready?, do: length(Node.list()) >= expected_peers()

  @impl true
  def init(nil) do
    :ok = :net_kernel.monitor_nodes(true, node_type: :visible)
    Logger.info("membership: start; #{summary()}")
    {:ok, nil}
  end

  @impl true
  def handle_info({:nodeup, node, _info}, state) do
    Logger.info("membership: nodeup #{node}; #{summary()}")
    {:noreply, state}
  end

  def handle_info({:nodedown, node, info}, state) do
    Logger.info("membership: nodedown #{node} (#{inspect(info[:nodedown_reason])}); #{summary()}")
    {:noreply, state}
  end

  def handle_info(_, state), do: {:noreply, state}

  defp summary do
    "members (#{length(members())}): #{Enum.join(members(), " ")}"
  end
end
