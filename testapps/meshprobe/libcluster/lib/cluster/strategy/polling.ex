defmodule Cluster.Strategy.Polling do
  @moduledoc """
  The loop shared by the polling strategies (DNSPoll, Kubernetes.DNS, Kubernetes.DNSSRV, Kubernetes):
  every `polling_interval` ms (5000) ask the strategy for the nodes it finds now, then disconnect
  those that left the list and connect every node in it (`Cluster.Strategy.poll_round/2`). A
  strategy `use`s this module and defines `nodes/1`, from its `%Cluster.Strategy.State{}` (whose
  `meta` is the set the previous round kept) to a list of node names.

  `use Cluster.Strategy.Polling, first_poll: :init` makes the first round inside `init/1`, as
  libcluster's DNSPoll, Kubernetes.DNS and Kubernetes strategies do: the application that starts
  `Cluster.Supervisor` then waits for that first answer (up to the 15 s HTTP timeout for the
  Kubernetes API). The default, `:continue`, makes it right after `init/1` (Kubernetes.DNSSRV).
  """

  @callback nodes(Cluster.Strategy.State.t()) :: [node()]

  defmacro __using__(opts) do
    init_body =
      case Keyword.get(opts, :first_poll, :continue) do
        :init ->
          quote do
            {:ok, Cluster.Strategy.Polling.poll(__MODULE__, %{state | meta: MapSet.new()})}
          end

        :continue ->
          quote do
            {:ok, %{state | meta: MapSet.new()}, {:continue, :poll}}
          end
      end

    quote do
      use GenServer
      use Cluster.Strategy
      @behaviour Cluster.Strategy.Polling
      alias Cluster.Strategy.State

      @impl Cluster.Strategy
      def start_link([%State{} = state]), do: GenServer.start_link(__MODULE__, state)

      @impl GenServer
      def init(state), do: unquote(init_body)

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
