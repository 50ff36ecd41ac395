defmodule Cluster.Strategy.Epmd do
  @moduledoc """
  Connects to a fixed list of node names.

  Config: `hosts` (node atoms; an empty list means the strategy does nothing) and `timeout`
  (`:infinity`, the default, connects once at start; an integer retries every that many ms).
  Never disconnects.
  """
  use GenServer
  use Cluster.Strategy
  alias Cluster.Strategy.State

  @impl Cluster.Strategy
  def start_link([%State{config: config} = state]) do
    case Keyword.get(config, :hosts, []) do
      [] -> :ignore
      hosts when is_list(hosts) -> GenServer.start_link(__MODULE__, %{state | meta: hosts})
    end
  end

  @impl true
  def init(state), do: {:ok, connect(state)}

  @impl true
  def handle_info(:connect, state), do: {:noreply, connect(state)}
  def handle_info(_, state), do: {:noreply, state}

  defp connect(%State{meta: hosts} = state) do
    Cluster.Strategy.connect_nodes(state.topology, state.connect, state.list_nodes, hosts)

    case Keyword.get(state.config, :timeout, :infinity) do
      :infinity -> :ok
      ms when is_integer(ms) and ms > 0 -> Process.send_after(self(), :connect, ms)
    end

    state
  end
end
