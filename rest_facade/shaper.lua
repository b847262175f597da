-- netweave REST response shaper (Envoy Lua filter, placed BEFORE the gRPC-JSON transcoder,
-- so on the way out it sees the transcoded JSON). It closes the gap between what the
-- transcoder emits and the O2ims wire contract:
--   * list responses: {"nextPageToken":"..","resourcePools":[..]} -> the bare array [..]
--   * upstream errors: google.rpc.Status JSON -> RFC 7807 application/problem+json
--   * no grpc-* or internal x-o2ims-* headers leak to REST clients
-- Native gRPC callers (content-type application/grpc*) pass through untouched.

-- Request side records "this is REST" here; the access log reads grpc_status from it too.
local NAMESPACE = "netweave.rest"

-- The HTTP statuses the transcoder maps gRPC codes to; anything else is titled "Error".
local REASON_PHRASES = {
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [409] = "Conflict",
  [429] = "Too Many Requests", [499] = "Client Closed Request",
  [500] = "Internal Server Error", [501] = "Not Implemented",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

local STRIPPED_HEADERS = {
  "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-accept-encoding",
  "grpc-encoding",
}

local function starts_with(text, prefix)
  return text:sub(1, #prefix) == prefix
end

-- The raw (still JSON-escaped) value of the first `"key":"..."` in `body`, or nil. Copying
-- the escaped bytes verbatim into our own JSON string keeps it correctly escaped.
-- Protobuf's JSON printer emits fields in field-number order without spaces, so for
-- google.rpc.Status the first "message" is the top-level one, ahead of any details.
local function raw_json_string(body, key)
  local _, last = body:find('"' .. key .. '":"', 1, true)
  if last == nil then
    return nil
  end
  local i = last + 1
  while i <= #body do
    local byte = body:byte(i)
    if byte == 92 then -- backslash: skip the escaped character, which may be a quote
      i = i + 2
    elseif byte == 34 then -- the closing quote
      return body:sub(last + 1, i - 1)
    else
      i = i + 1
    end
  end
  return nil
end

-- The array of the collection field `name` in a list response body. The transcoder's field
-- order is not guaranteed, but the only other field is the page token, which is base64url
-- (no brackets, no quotes): so the array runs from `"name":[` to the last "]" of the body.
local function bare_array(body, name)
  local _, open = body:find('"' .. name .. '":[', 1, true)
  if open == nil then
    return "[]" -- an empty collection the printer left out
  end
  for close = #body, open, -1 do
    if body:byte(close) == 93 then
      return body:sub(open, close)
    end
  end
  return "[]"
end

function envoy_on_request(handle)
  local content_type = handle:headers():get("content-type") or ""
  if not starts_with(content_type, "application/grpc") then
    handle:streamInfo():dynamicMetadata():set(NAMESPACE, "rest", "1")
  end
end

function envoy_on_response(handle)
  local metadata = handle:streamInfo():dynamicMetadata():get(NAMESPACE)
  if metadata == nil or metadata["rest"] ~= "1" then
    return -- native gRPC: leave headers, body and trailers alone
  end
  local headers = handle:headers()

  -- For the access log: Envoy's own %GRPC_STATUS% is derived from the HTTP status once the
  -- transcoder has converted an error (NOT_FOUND would be logged as 12, UNIMPLEMENTED).
  local grpc_status = headers:get("grpc-status")
  if grpc_status ~= nil then
    handle:streamInfo():dynamicMetadata():set(NAMESPACE, "grpc_status", grpc_status)
  end
  local collection = headers:get("x-o2ims-collection")
  -- Collect first: removing while iterating the header map is undefined.
  local internal = {}
  for name, _ in pairs(headers) do
    if starts_with(name, "x-o2ims-") then
      internal[#internal + 1] = name
    end
  end
  for _, name in ipairs(internal) do
    headers:remove(name)
  end
  for _, name in ipairs(STRIPPED_HEADERS) do
    headers:remove(name)
  end

  local status = tonumber(headers:get(":status")) or 0
  local content_type = headers:get("content-type") or ""

  -- Every header change must come BEFORE handle:body(): once the body is buffered the
  -- headers have moved on and touching them raises "object used outside of proper scope".
  -- Envoy updates content-length itself when setBytes() changes the body.
  if status >= 200 and status < 300 then
    if collection ~= nil then
      headers:replace("content-type", "application/json")
      local body = handle:body(true)
      local text = body:getBytes(0, body:length())
      local token = raw_json_string(text, "nextPageToken")
      if token ~= nil and token ~= "" then
        -- Kept for the paging step (Link: rel="next"); never part of the O2ims body.
        handle:streamInfo():dynamicMetadata():set(NAMESPACE, "next_page_token", token)
      end
      body:setBytes(bare_array(text, collection))
    elseif content_type == "" or starts_with(content_type, "application/grpc") then
      headers:replace("content-type", "application/json")
    end
  elseif status >= 400 and starts_with(content_type, "application/json") then
    -- With convert_grpc_status the transcoder's JSON error body is a google.rpc.Status
    -- {"code":N,"message":"...","details":[...]}. (Envoy's own replies are not JSON here:
    -- local_reply_config has already made them application/problem+json.)
    headers:replace("content-type", "application/problem+json")
    local body = handle:body(true)
    local text = body:getBytes(0, body:length())
    local code = text:match('"code":(%d+)')
    if code ~= nil then
      handle:streamInfo():dynamicMetadata():set(NAMESPACE, "grpc_status", code)
    end
    local title = REASON_PHRASES[status] or "Error"
    local detail = raw_json_string(text, "message")
    if detail == nil or detail == "" then
      detail = title
    end
    body:setBytes('{"status":' .. status .. ',"title":"' .. title .. '","detail":"' .. detail .. '"}')
  end
end
