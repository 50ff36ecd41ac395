defmodule Libcluster.MixProject do
  use Mix.Project

  # meshprobe's own stand-in for the libcluster application (which cannot be installed here:
  # no Hex). It is an OTP application named :libcluster, like the real one, so that the
  # `:libcluster` keys of sys.config or of an extra `-config` file are loaded at boot exactly
  # as they would be for a release that depends on libcluster. Not the libcluster code.
  def project do
    [
      app: :libcluster,
      version: "3.5.0-meshprobe",
      elixir: "~> 1.14",
      deps: []
    ]
  end

  # Like libcluster 3.x: no application callback; the user's tree starts Cluster.Supervisor.
  # The same runtime applications as libcluster 3.5 (less :jason): :inets and :ssl for the
  # Kubernetes API strategy's :httpc over TLS, :crypto for Gossip's secret. A release that
  # depends on :libcluster therefore always carries and starts them.
  def application do
    [extra_applications: [:logger, :inets, :crypto, :ssl]]
  end
end
