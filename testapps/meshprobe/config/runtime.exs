import Config

# Like most real applications, meshprobe has a runtime configuration read at boot. It only marks
# that it ran (visible at /info) and lets the log level come from the environment; it does not touch
# :libcluster, so a topology passed in an extra `-config` file must survive it.
# The build script can leave this file out (version suffix "-noruntime") to test both cases.
config :meshprobe, runtime_exs_loaded: true

case System.get_env("MESHPROBE_LOG_LEVEL") do
  nil -> :ok
  level -> config :logger, level: String.to_atom(level)
end
