import Config

# Timestamps with the date, in UTC, so membership changes on several hosts can be lined up.
config :logger, :console,
  format: "$date $time [$level] $message\n",
  utc_log: true

config :logger, utc_log: true

config :meshprobe,
  http_port: 4000,
  http_ip: {0, 0, 0, 0},
  expected_peers: 0
