defmodule Cluster.Strategy.State do
  @moduledoc "What every strategy process is started with: one per topology."
  @type t :: %__MODULE__{
          topology: atom,
          connect: {module, atom, list},
          disconnect: {module, atom, list},
          list_nodes: {module, atom, list},
          config: keyword,
          meta: term
        }
  defstruct topology: nil,
            connect: {:net_kernel, :connect_node, []},
            disconnect: {:erlang, :disconnect_node, []},
            list_nodes: {:erlang, :nodes, [:connected]},
            config: [],
            meta: nil
end
