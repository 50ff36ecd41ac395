import Config

# Timestamps with the date, in UTC, so membership changes on several hosts can be lined up.
config :logger, :console,
  format: "$date $time [$level] $message\n",
  utc_log: true

config :logger, utc_log: true

# meshprobe's own settings (http_port, http_ip, expected_peers) have their defaults in code, not
# here, so a deployment can set any of them in an extra `-config` file. Keys set here at build time
# win over such a file when config/runtime.exs exists; this one exists to show that (see /info).
config :meshprobe, set_at_build: "build"
