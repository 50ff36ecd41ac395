defmodule Meshprobe do
  @moduledoc "Helpers shared by meshprobe's modules."

  @doc "The application's version as built (the release version)."
  def version, do: to_string(Application.spec(:meshprobe, :vsn))
end
