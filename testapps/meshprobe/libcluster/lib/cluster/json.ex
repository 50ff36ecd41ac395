defmodule Cluster.JSON do
  @moduledoc """
  A small, strict JSON decoder (RFC 8259) for the Kubernetes API strategy: OTP 25 has no JSON
  module and libcluster's Jason cannot be installed here (no Hex).

  Values map as Jason's defaults do: objects to maps with string keys (a repeated key: the last one
  wins), arrays to lists, strings to binaries, numbers without fraction or exponent to integers,
  other numbers to floats, `true`/`false` to booleans and `null` to `nil`. A top-level scalar is
  accepted, as RFC 8259 allows.

  Refused, with the byte offset where the input went wrong: anything but whitespace after the
  value, empty input, trailing commas, leading zeros, `+`, `.5`, `1.`, NaN/Infinity, comments,
  single quotes, unescaped control characters, unknown escapes, lone UTF-16 surrogates, invalid
  UTF-8, numbers a float cannot hold, and nesting deeper than 512 levels.
  """

  @max_depth 512

  @typedoc "Why the input is not JSON, and the byte offset where it went wrong."
  @type error :: {atom, non_neg_integer}

  @doc "Decodes one JSON text (a binary or iodata): `{:ok, term}` or `{:error, {reason, offset}}`."
  @spec decode(iodata) :: {:ok, term} | {:error, error}
  def decode(input) do
    data = IO.iodata_to_binary(input)

    try do
      {value, rest} = value(ws(data), 0)

      case ws(rest) do
        "" -> {:ok, value}
        extra -> throw({:json_error, :trailing_data, extra})
      end
    catch
      {:json_error, reason, rest} -> {:error, {reason, byte_size(data) - byte_size(rest)}}
    end
  end

  @doc "Like `decode/1`, but raises an `ArgumentError` that names the reason and the offset."
  @spec decode!(iodata) :: term
  def decode!(input) do
    case decode(input) do
      {:ok, value} -> value
      {:error, {reason, offset}} -> raise ArgumentError, "invalid JSON at byte #{offset}: #{reason}"
    end
  end

  defp fail(reason, rest), do: throw({:json_error, reason, rest})

  defp ws(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: ws(rest)
  defp ws(rest), do: rest

  defp value(data, depth) when depth >= @max_depth, do: fail(:too_deep, data)
  defp value(<<?{, rest::binary>>, depth), do: object(ws(rest), depth + 1)
  defp value(<<?[, rest::binary>>, depth), do: array(ws(rest), depth + 1)
  defp value(<<?", rest::binary>>, _depth), do: string(rest, rest, 0, [])
  defp value(<<"true", rest::binary>>, _depth), do: {true, rest}
  defp value(<<"false", rest::binary>>, _depth), do: {false, rest}
  defp value(<<"null", rest::binary>>, _depth), do: {nil, rest}
  defp value(<<c, _::binary>> = data, _depth) when c == ?- or c in ?0..?9, do: number(data)
  defp value("", _depth), do: fail(:unexpected_end, "")
  defp value(data, _depth), do: fail(:unexpected_byte, data)

  # ---- objects and arrays

  defp object(<<?}, rest::binary>>, _depth), do: {%{}, rest}
  defp object(data, depth), do: members(data, depth, %{})

  defp members(<<?", rest::binary>>, depth, acc) do
    {key, rest} = string(rest, rest, 0, [])

    rest =
      case ws(rest) do
        <<?:, after_colon::binary>> -> ws(after_colon)
        other -> fail(:expected_colon, other)
      end

    {value, rest} = value(rest, depth)
    acc = Map.put(acc, key, value)

    case ws(rest) do
      <<?,, more::binary>> -> members(ws(more), depth, acc)
      <<?}, more::binary>> -> {acc, more}
      other -> fail(:expected_comma_or_closing_brace, other)
    end
  end

  defp members(data, _depth, _acc), do: fail(:expected_string_key, data)

  defp array(<<?], rest::binary>>, _depth), do: {[], rest}
  defp array(data, depth), do: elements(data, depth, [])

  defp elements(data, depth, acc) do
    {value, rest} = value(data, depth)

    case ws(rest) do
      <<?,, more::binary>> -> elements(ws(more), depth, [value | acc])
      <<?], more::binary>> -> {Enum.reverse([value | acc]), more}
      other -> fail(:expected_comma_or_closing_bracket, other)
    end
  end

  # ---- strings: runs of plain bytes are copied as one slice of the input

  defp string(<<?", rest::binary>>, start, len, acc) do
    {IO.iodata_to_binary([acc | binary_part(start, 0, len)]), rest}
  end

  defp string(<<?\\, rest::binary>>, start, len, acc) do
    {char, rest} = escape(rest)
    string(rest, rest, 0, [acc, binary_part(start, 0, len), char])
  end

  defp string(<<c, _::binary>> = data, _start, _len, _acc) when c < 0x20, do: fail(:control_character_in_string, data)
  defp string(<<c, rest::binary>>, start, len, acc) when c < 0x80, do: string(rest, start, len + 1, acc)

  # Erlang's utf8 segment refuses overlong forms, surrogates and code points above U+10FFFF.
  defp string(<<_::utf8, rest::binary>> = data, start, len, acc) do
    string(rest, start, len + byte_size(data) - byte_size(rest), acc)
  end

  defp string("", _start, _len, _acc), do: fail(:unterminated_string, "")
  defp string(data, _start, _len, _acc), do: fail(:invalid_utf8, data)

  defp escape(<<?", rest::binary>>), do: {"\"", rest}
  defp escape(<<?\\, rest::binary>>), do: {"\\", rest}
  defp escape(<<?/, rest::binary>>), do: {"/", rest}
  defp escape(<<?b, rest::binary>>), do: {"\b", rest}
  defp escape(<<?f, rest::binary>>), do: {"\f", rest}
  defp escape(<<?n, rest::binary>>), do: {"\n", rest}
  defp escape(<<?r, rest::binary>>), do: {"\r", rest}
  defp escape(<<?t, rest::binary>>), do: {"\t", rest}

  defp escape(<<?u, rest::binary>> = data) do
    case hex4(rest) do
      {high, <<"\\u", low_text::binary>>} when high in 0xD800..0xDBFF ->
        case hex4(low_text) do
          {low, after_low} when low in 0xDC00..0xDFFF ->
            {<<0x10000 + (high - 0xD800) * 0x400 + (low - 0xDC00)::utf8>>, after_low}

          _ ->
            fail(:lone_surrogate, data)
        end

      {code, _} when code in 0xD800..0xDFFF ->
        fail(:lone_surrogate, data)

      {code, after_code} ->
        {<<code::utf8>>, after_code}

      :error ->
        fail(:invalid_unicode_escape, data)
    end
  end

  defp escape(data), do: fail(:invalid_escape, data)

  defp hex4(<<a, b, c, d, rest::binary>>) do
    case Integer.parse(<<a, b, c, d>>, 16) do
      {code, ""} when a not in [?+, ?-] -> {code, rest}
      _ -> :error
    end
  end

  defp hex4(_), do: :error

  # ---- numbers: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?

  defp number(data) do
    {sign, after_sign} =
      case data do
        <<?-, rest::binary>> -> {"-", rest}
        _ -> {"", data}
      end

    {int, rest} =
      case after_sign do
        <<?0, rest::binary>> -> {"0", rest}
        <<c, _::binary>> when c in ?1..?9 -> digits(after_sign)
        _ -> fail(:invalid_number, data)
      end

    {frac, rest} =
      case rest do
        <<?., more::binary>> ->
          case digits(more) do
            {"", _} -> fail(:invalid_number, data)
            {text, after_frac} -> {text, after_frac}
          end

        _ ->
          {nil, rest}
      end

    {exp, rest} =
      case rest do
        <<e, more::binary>> when e in [?e, ?E] ->
          {exp_sign, more} =
            case more do
              <<s, after_s::binary>> when s in [?+, ?-] -> {<<s>>, after_s}
              _ -> {"", more}
            end

          case digits(more) do
            {"", _} -> fail(:invalid_number, data)
            {text, after_exp} -> {exp_sign <> text, after_exp}
          end

        _ ->
          {nil, rest}
      end

    case {frac, exp} do
      {nil, nil} ->
        {String.to_integer(sign <> int), rest}

      _ ->
        # binary_to_float wants a fraction ("1.0e5", not "1e5").
        text = sign <> int <> "." <> (frac || "0") <> if(exp, do: "e" <> exp, else: "")

        try do
          {:erlang.binary_to_float(text), rest}
        rescue
          ArgumentError -> fail(:number_out_of_range, data)
        end
    end
  end

  defp digits(data), do: digits(data, 0, data)
  defp digits(<<c, rest::binary>>, n, start) when c in ?0..?9, do: digits(rest, n + 1, start)
  defp digits(rest, n, start), do: {binary_part(start, 0, n), rest}
end
