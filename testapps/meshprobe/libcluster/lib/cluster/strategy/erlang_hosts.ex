defmodule Cluster.Strategy.ErlangHosts do
  @moduledoc """
  Connects to every node registered in the EPMD of each host listed in `.hosts.erlang`
  (found by `:net_adm.host_file/0`: the current directory, then `$HOME`, then the OTP root).

  Config: `timeout` (`:infinity`, the default, connects once at start; an integer rescans every
  that many ms). Without a `.hosts.erlang` file the strategy logs a warning and does nothing.
  """
  use GenServer
  use Cluster.Strategy
  alias Cluster.Strategy.State

  @impl Cluster.Strategy
  def start_link([%State{} = state]) do
    case :net_adm.host_file() do
      {:error, _} ->
        Cluster.Logger.warn(state.topology, "couldn't find .hosts.erlang file - not joining cluster")
        :ignore

      hosts ->
        GenServer.start_link(__MODULE__, %{state | meta: hosts})
    end
  end

  @impl true
  def init(state), do: {:ok, connect(state)}

  @impl true
  def handle_info(:connect, state), do: {:noreply, connect(state)}
  def handle_info(_, state), do: {:noreply, state}

  defp connect(%State{meta: hosts} = state) do
    nodes =
      for host <- hosts, {:ok, names} <- [:net_adm.names(host)], {name, _port} <- names do
        :"#{name}@#{host}"
      end

    Cluster.Strategy.connect_nodes(state.topology, state.connect, state.list_nodes, nodes -- [node()])

    case Keyword.get(state.config, :timeout, :infinity) do
      :infinity -> :ok
      ms when is_integer(ms) and ms > 0 -> Process.send_after(self(), :connect, ms)
    end

    state
  end
end
