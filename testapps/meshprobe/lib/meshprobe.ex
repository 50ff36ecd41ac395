defmodule Meshprobe do
  @moduledoc "Helpers shared by meshprobe's modules."

  @doc "The application's version as built (the release version)."
  def version, do: to_string(Application.spec(:meshprobe, :vsn))

  @doc "An integer from an environment variable's text, or an error that names the variable."
  def parse_integer!(text, variable, %Range{first: first, last: last} = range) do
    case Integer.parse(String.trim(text)) do
      {n, ""} when n >= first and n <= last ->
        n

      _ ->
        raise ArgumentError,
              "#{variable}=#{inspect(text)} is not valid: set it to an integer in #{inspect(range)}"
    end
  end
end
