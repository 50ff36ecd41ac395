defmodule Meshprobe.MixProject do
  use Mix.Project

  # The build script sets MESHPROBE_VSN to make each release version from the same sources.
  # A version ending in "-broken" builds a release whose /health answers 500 (see Meshprobe.HTTP).
  @version System.get_env("MESHPROBE_VSN", "0.1.0")

  def project do
    [
      app: :meshprobe,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: true,
      # A path dependency only (no Hex): the :libcluster stand-in in ./libcluster.
      deps: [{:libcluster, path: "libcluster"}],
      releases: [
        meshprobe: [
          include_erts: true,
          include_executables_for: [:unix],
          steps: [:assemble, :tar]
        ]
      ]
    ]
  end

  def application do
    [
      mod: {Meshprobe.Application, []},
      # :ssl so that the release can run TLS distribution (-proto_dist inet_tls loads it at boot).
      extra_applications: [:logger, :inets, :ssl]
    ]
  end
end
