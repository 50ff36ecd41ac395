defmodule Cluster.Strategy.Polling do
  @moduledoc """
  The loop shared by the polling strategies (DNSPoll, Kubernetes.DNS, Kubernetes.DNSSRV): every
  `polling_interval` ms (5000) ask the strategy for the nodes it finds now, then connect the new ones
  and disconnect those that left (`Cluster.Strategy.poll_round/2`). A strategy `use`s this module and
  defines `nodes/1`, from its `%Cluster.Strategy.State{}` to a list of node names.
  """

  @callback nodes(Cluster.Strategy.State.t()) :: [node()]

  defmacro __using__(_opts) do
    quote do
      use GenServer
      use Cluster.Strategy
      @behaviour Cluster.Strategy.Polling
      alias Cluster.Strategy.State

      @impl Cluster.Strategy
      def start_link([%State{} = state]), do: GenServer.start_link(__MODULE__, state)

      @impl GenServer
      def init(state), do: {:ok, %{state | meta: MapSet.new()}, {:continue, :poll}}

      @impl GenServer
      def handle_continue(:poll, state), do: {:noreply, Cluster.Strategy.Polling.poll(__MODULE__, state)}

      @impl GenServer
      def handle_info(:poll, state), do: {:noreply, Cluster.Strategy.Polling.poll(__MODULE__, state)}
      def handle_info(_, state), do: {:noreply, state}
    end
  end

  @doc false
  def poll(module, %Cluster.Strategy.State{config: config} = state) do
    state = Cluster.Strategy.poll_round(state, module.nodes(state))
    Process.send_after(self(), :poll, Keyword.get(config, :polling_interval, 5_000))
    state
  end
end
