defmodule Cluster.Logger do
  @moduledoc false
  # Log lines carry the topology name, as libcluster's do; debug lines only with
  # `config :libcluster, debug: true`.
  require Logger

  def debug(topology, msg) do
    if Application.get_env(:libcluster, :debug, false) do
      Logger.debug("[libcluster:#{topology}] #{msg}")
    end

    :ok
  end

  def info(topology, msg), do: Logger.info("[libcluster:#{topology}] #{msg}")
  def warn(topology, msg), do: Logger.warning("[libcluster:#{topology}] #{msg}")
  def error(topology, msg), do: Logger.error("[libcluster:#{topology}] #{msg}")
end
