/*
 * netweave REST shaper: an Envoy HTTP filter (dynamic module) placed BEFORE the gRPC-JSON
 * transcoder, so on the way in it sees the client's REST request and on the way out the
 * transcoded JSON. It closes the gap between what the transcoder does and the O2ims wire
 * contract:
 *   - requests whose path or query is not UTF-8 once percent-decoded: 400 (the core could not
 *     even decode the gRPC request, and would answer 500); dot segments: 400
 *   - query parameters the path does not accept are dropped and counted (or refused, strict)
 *   - bare boolean query flags (`?all_fields`) get their implied `=true`
 *   - request bodies are JSON, at most the transcoder's max_request_body_size (else 413), and
 *     a PUT/PATCH without one (or of JSON null) is a 400
 *   - list responses: {"nextPageToken":"..","resourcePools":[..]} -> the bare array [..]
 *   - google.protobuf.Empty responses (DELETE): no body at all instead of `{}`
 *   - `x-o2ims-http-status` from the core (201 on create, with `location`) becomes the HTTP
 *     status of a success; a next-page token becomes `Link: <..>; rel="next"`
 *   - gRPC UNIMPLEMENTED (a published API the core does not serve): 404, not 501
 *   - upstream errors: google.rpc.Status JSON -> RFC 7807 application/problem+json
 *   - no grpc-* or internal x-o2ims-* headers (or trailers, over HTTP/2) leak to REST clients
 *   - memory that runs out while a request is checked or a response shaped: 503, never the
 *     request unchecked or the response as the core sent it (out_of_memory)
 * Native gRPC callers (content-type application/grpc*) pass through untouched.
 *
 * Why native: it replaced a Lua filter doing the same (rest_facade/shaper.lua before), whose
 * interpreter entry, header tables and string copies cost ~25 us of Envoy CPU per REST call.
 * Here a single-object GET success touches headers only; a body is buffered only when it must
 * change (lists, Empty, errors) or be looked at (a short PUT/PATCH); a request body of unknown
 * length is counted as it passes, never buffered.
 *
 * What a response is (list, empty) and what a path accepts (query names, flags, methods) come
 * from the route: rest_facade/envoy_routes.py puts them into the routes' metadata under this
 * filter's name, derived from the descriptor set.
 *
 * Configuration (rest_facade/envoy_config.py renders it, from the Python constants):
 * filter_name "shaper", filter_config a google.protobuf.StringValue of `key=value` lines:
 *   max_request_body_bytes  the transcoder's max_request_body_size (413 above it)
 *   strict_query            true: an unknown query parameter is a 400, not dropped
 *   rest_namespace          dynamic metadata namespace ("this is REST", path, grpc_status...)
 *   route_namespace         the route metadata namespace (the HTTP filter's name)
 *   ignored_query_header    the request header counting dropped query parameters
 *   unauthorized_challenge  WWW-Authenticate of a 401 from the core
 *
 * ABI: the slice of Envoy's dynamic-module ABI both HTTP filters use is declared in
 * http_filter.h (with the hooks Envoy requires and this filter does not use);
 * rest_facade/envoy_modules.py builds the module with `cc`.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_filter.h"

/* --- small string tools ----------------------------------------------------------------- */

/* The first occurrence of `needle` in `text` at or after `from`, or -1. */
static long find(buffer text, size_t from, buffer needle) {
  if (needle.length == 0 || text.length < needle.length) {
    return needle.length == 0 ? (long)from : -1;
  }
  for (size_t i = from; i + needle.length <= text.length; i++) {
    if (text.ptr[i] == needle.ptr[0] && memcmp(text.ptr + i, needle.ptr, needle.length) == 0) {
      return (long)i;
    }
  }
  return -1;
}

/* A growable byte string; `ok` turns false when memory runs out (callers then give up). */
typedef struct {
  char* data;
  size_t length;
  size_t capacity;
  bool ok;
} text_builder;

static void append(text_builder* out, const char* data, size_t length) {
  if (!out->ok || length == 0) {
    return;
  }
  if (out->length + length + 1 > out->capacity) {
    size_t capacity = out->capacity ? out->capacity : 64;
    while (out->length + length + 1 > capacity) {
      capacity *= 2;
    }
    char* grown = realloc(out->data, capacity);
    if (grown == NULL) {
      out->ok = false;
      return;
    }
    out->data = grown;
    out->capacity = capacity;
  }
  memcpy(out->data + out->length, data, length);
  out->length += length;
  out->data[out->length] = '\0';
}

static void append_text(text_builder* out, buffer text) { append(out, text.ptr, text.length); }

static buffer built(const text_builder* out) {
  return (buffer){out->data ? out->data : "", out->length};
}

static void release(text_builder* out) {
  free(out->data);
  *out = (text_builder){NULL, 0, 0, true};
}

#define NEW_BUILDER ((text_builder){NULL, 0, 0, true})

/* `text` with every %XX replaced by its byte (a lone % stays). `plus_as_space` for query
 * names, where form encoding writes a space as "+". */
static void percent_decode(text_builder* out, buffer text, bool plus_as_space) {
  for (size_t i = 0; i < text.length; i++) {
    char c = text.ptr[i];
    if (c == '%' && i + 2 < text.length) {
      int high = hex_value(text.ptr[i + 1]);
      int low = hex_value(text.ptr[i + 2]);
      if (high >= 0 && low >= 0) {
        char byte = (char)(high * 16 + low);
        append(out, &byte, 1);
        i += 2;
        continue;
      }
    }
    if (c == '+' && plus_as_space) {
      c = ' ';
    }
    append(out, &c, 1);
  }
}

/* Whether `text` is well-formed UTF-8 as protobuf requires of string fields: no overlong
 * forms, no surrogates, nothing above U+10FFFF. */
static bool valid_utf8(buffer text) {
  const unsigned char* bytes = (const unsigned char*)text.ptr;
  size_t i = 0;
  while (i < text.length) {
    unsigned char c = bytes[i];
    size_t count;
    unsigned char low = 0x80, high = 0xBF;
    if (c < 0x80) {
      count = 0;
    } else if (c >= 0xC2 && c <= 0xDF) {
      count = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      count = 2;
      if (c == 0xE0) low = 0xA0;
      if (c == 0xED) high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      count = 3;
      if (c == 0xF0) low = 0x90;
      if (c == 0xF4) high = 0x8F;
    } else {
      return false;
    }
    for (size_t k = 1; k <= count; k++) {
      if (i + k >= text.length) {
        return false;
      }
      /* Only the first continuation byte has the narrowed range. */
      unsigned char lo = k == 1 ? low : 0x80, hi = k == 1 ? high : 0xBF;
      if (bytes[i + k] < lo || bytes[i + k] > hi) {
        return false;
      }
    }
    i += count + 1;
  }
  return true;
}

/* Whether the path (query excluded) has a `.` or `..` segment, also spelled %2E. */
static bool has_dot_segment(buffer path) {
  size_t end = 0;
  while (end < path.length && path.ptr[end] != '?') {
    end++;
  }
  size_t i = 0;
  while (i < end) {
    while (i < end && path.ptr[i] == '/') {
      i++;
    }
    size_t dots = 0;
    bool only_dots = i < end;
    while (i < end && path.ptr[i] != '/') {
      if (path.ptr[i] == '.') {
        dots++;
        i++;
      } else if (path.ptr[i] == '%' && i + 2 < end && path.ptr[i + 1] == '2' &&
                 (path.ptr[i + 2] == 'e' || path.ptr[i + 2] == 'E')) {
        dots++;
        i += 3;
      } else {
        only_dots = false;
        i++;
      }
    }
    if (only_dots && (dots == 1 || dots == 2)) {
      return true;
    }
  }
  return false;
}

/* The next `&`-separated non-empty part of `query` from *position, or false at the end. */
static bool next_part(buffer query, size_t* position, buffer* part) {
  size_t i = *position;
  while (i < query.length && query.ptr[i] == '&') {
    i++;
  }
  if (i >= query.length) {
    *position = i;
    return false;
  }
  size_t start = i;
  while (i < query.length && query.ptr[i] != '&') {
    i++;
  }
  *part = (buffer){query.ptr + start, i - start};
  *position = i;
  return true;
}

/* A query part's name: up to its first '='. */
static buffer part_name(buffer part) {
  size_t i = 0;
  while (i < part.length && part.ptr[i] != '=') {
    i++;
  }
  return (buffer){part.ptr, i};
}

/* Splits `path` at its first '?'; false if it has none. */
static bool split_query(buffer path, buffer* base, buffer* query) {
  const char* mark = memchr(path.ptr, '?', path.length);
  if (mark == NULL) {
    *base = path;
    *query = (buffer){path.ptr + path.length, 0};
    return false;
  }
  *base = (buffer){path.ptr, (size_t)(mark - path.ptr)};
  *query = (buffer){mark + 1, path.length - (size_t)(mark - path.ptr) - 1};
  return true;
}

/* The raw (still JSON-escaped) value of the first `"key":"..."` in `body`. Copying the escaped
 * bytes verbatim into our own JSON string keeps it correctly escaped. Protobuf's JSON printer
 * emits fields in field-number order without spaces, so for google.rpc.Status the first
 * "message" is the top-level one, ahead of any details. */
static bool raw_json_string(buffer body, const char* key, buffer* value) {
  char pattern[64];
  int length = snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
  if (length < 0 || (size_t)length >= sizeof pattern) {
    return false;
  }
  long at = find(body, 0, (buffer){pattern, (size_t)length});
  if (at < 0) {
    return false;
  }
  size_t start = (size_t)at + (size_t)length;
  for (size_t i = start; i < body.length;) {
    if (body.ptr[i] == '\\') {
      i += 2; /* the escaped character may be a quote */
    } else if (body.ptr[i] == '"') {
      *value = (buffer){body.ptr + start, i - start};
      return true;
    } else {
      i++;
    }
  }
  return false;
}

/* The array of the collection field `name` in a list response body. The transcoder's field
 * order is not guaranteed, but the only other field is the page token, which is base64url (no
 * brackets, no quotes): so the array runs from the first `"name":[` to the last "]" of the
 * body. (`"name":[` is looked for in place, without building it: nothing here can run out of
 * memory and so mistake a list for an empty one.) */
static buffer bare_array(buffer body, buffer name) {
  buffer after = LITERAL("\":[");
  long at = -1;
  for (long candidate = find(body, 0, name); candidate >= 0;
       candidate = find(body, (size_t)candidate + 1, name)) {
    size_t end = (size_t)candidate + name.length;
    if (candidate > 0 && body.ptr[candidate - 1] == '"' &&
        starts_with((buffer){body.ptr + end, body.length - end}, after)) {
      at = candidate;
      break;
    }
    if (end >= body.length) {
      break; /* (an empty name is found at every position up to the end) */
    }
  }
  if (at < 0) {
    return LITERAL("[]"); /* an empty collection the printer left out */
  }
  size_t open = (size_t)at + name.length + after.length - 1;
  for (size_t close = body.length; close-- > open;) {
    if (body.ptr[close] == ']') {
      return (buffer){body.ptr + open, close - open + 1};
    }
  }
  return LITERAL("[]");
}

/* --- configuration ---------------------------------------------------------------------- */

#define FILTER_NAME "shaper"

/* The strings are the filter's own copies (malloc), with their lengths: measured once, when
 * the configuration is read, never per request. A NULL ptr: not configured (yet). */
typedef struct {
  uint64_t max_request_body_bytes;
  bool strict_query;
  buffer rest_namespace;
  buffer route_namespace;
  buffer ignored_query_header;
  buffer unauthorized_challenge;
} shaper_config;

static void config_free(shaper_config* config) {
  free((char*)config->rest_namespace.ptr);
  free((char*)config->route_namespace.ptr);
  free((char*)config->ignored_query_header.ptr);
  free((char*)config->unauthorized_challenge.ptr);
  free(config);
}

/* A copy of a non-empty `text`, or a NULL ptr when memory ran out. */
static buffer copy_of(buffer text) {
  char* copy = malloc(text.length);
  if (copy == NULL) {
    return (buffer){NULL, 0};
  }
  memcpy(copy, text.ptr, text.length);
  return (buffer){copy, text.length};
}

/* One `key=value` line of the configuration; false for an unknown key or a bad value. */
static bool config_line(shaper_config* config, buffer key, buffer value) {
  if (same(key, LITERAL("max_request_body_bytes"))) {
    if (value.length == 0 || value.length > 12) return false;
    uint64_t number = 0;
    for (size_t i = 0; i < value.length; i++) {
      if (value.ptr[i] < '0' || value.ptr[i] > '9') return false;
      number = number * 10 + (uint64_t)(value.ptr[i] - '0');
    }
    config->max_request_body_bytes = number;
    return number > 0;
  }
  if (same(key, LITERAL("strict_query"))) {
    if (same(value, LITERAL("true"))) {
      config->strict_query = true;
      return true;
    }
    config->strict_query = false;
    return same(value, LITERAL("false"));
  }
  buffer* target = NULL;
  if (same(key, LITERAL("rest_namespace"))) target = &config->rest_namespace;
  if (same(key, LITERAL("route_namespace"))) target = &config->route_namespace;
  if (same(key, LITERAL("ignored_query_header"))) target = &config->ignored_query_header;
  if (same(key, LITERAL("unauthorized_challenge"))) target = &config->unauthorized_challenge;
  if (target == NULL || value.length == 0) {
    return false;
  }
  free((char*)target->ptr);
  *target = copy_of(value);
  return target->ptr != NULL;
}

EXPORT const void* envoy_dynamic_module_on_http_filter_config_new(void* config_envoy, buffer name,
                                                                  buffer text) {
  (void)config_envoy;
  if (!same(name, LITERAL(FILTER_NAME))) {
    return NULL;
  }
  shaper_config* config = calloc(1, sizeof *config);
  if (config == NULL) {
    return NULL;
  }
  size_t position = 0;
  while (position < text.length) {
    size_t end = position;
    while (end < text.length && text.ptr[end] != '\n') {
      end++;
    }
    buffer line = {text.ptr + position, end - position};
    position = end + 1;
    if (line.length == 0) {
      continue;
    }
    const char* equals = memchr(line.ptr, '=', line.length);
    if (equals == NULL ||
        !config_line(config, (buffer){line.ptr, (size_t)(equals - line.ptr)},
                     (buffer){equals + 1, line.length - (size_t)(equals - line.ptr) - 1})) {
      config_free(config);
      return NULL; /* Envoy rejects the configuration */
    }
  }
  if (config->max_request_body_bytes == 0 || config->rest_namespace.ptr == NULL ||
      config->route_namespace.ptr == NULL || config->ignored_query_header.ptr == NULL ||
      config->unauthorized_challenge.ptr == NULL) {
    config_free(config);
    return NULL;
  }
  return config;
}

EXPORT void envoy_dynamic_module_on_http_filter_config_destroy(const void* config) {
  config_free((shaper_config*)config);
}

/* Not used (no per-route configuration); Envoy resolves them only for one. */
EXPORT const void* envoy_dynamic_module_on_http_filter_per_route_config_new(buffer name,
                                                                            buffer config) {
  (void)name, (void)config;
  return NULL;
}

EXPORT void envoy_dynamic_module_on_http_filter_per_route_config_destroy(const void* config) {
  (void)config;
}

/* --- per stream ------------------------------------------------------------------------- */

typedef enum {
  REQUEST_PASS,        /* nothing to look at in the request body */
  /* A body of unknown length: counted as it passes (never buffered), 413 once it outgrows
   * max_request_body_bytes. Not buffered because nothing here needs all of it, and because
   * Envoy caps what a filter may buffer of an HTTP/2 stream at the stream's window
   * (initial_stream_window_size, 64 KiB: its codec's per-stream buffer limit), not at the
   * listener's per_connection_buffer_limit_bytes: buffering answered 413 for any HTTP/2 body
   * of unknown length above 64 KiB, and clients that keep sending (httpx) hung. */
  REQUEST_COUNT,
  /* Hold a PUT/PATCH and buffer its body while it is short (16 bytes at most), to refuse
   * an empty body or JSON null whatever the framing: a short content-length, or none (HTTP/2
   * may end the body with the headers, with trailers or with empty DATA frames). */
  REQUEST_CHECK_NULL,
} request_body_mode;

/* The longest request body looked at for JSON null (a longer one is not null, or padded
 * with whitespace, which a client never sends). */
#define NULL_CHECK_BYTES 16

typedef enum {
  RESPONSE_PASS,
  RESPONSE_EMPTY, /* google.protobuf.Empty: no body */
  RESPONSE_LIST,  /* the collection's bare array */
  RESPONSE_ERROR, /* google.rpc.Status -> ProblemDetails */
} response_body_mode;

typedef struct {
  const shaper_config* config;
  bool rest;
  request_body_mode request_mode;
  bool length_unknown;      /* REQUEST_CHECK_NULL: no content-length (the body may grow) */
  uint64_t body_bytes;      /* REQUEST_COUNT, REQUEST_CHECK_NULL: the body so far */
  response_body_mode response_mode;
  int status;               /* RESPONSE_ERROR: the transcoder's HTTP status */
  text_builder collection;  /* RESPONSE_LIST: the collection field's name (owned) */
} stream;

EXPORT const void* envoy_dynamic_module_on_http_filter_new(const void* config,
                                                          void* filter_envoy) {
  (void)filter_envoy;
  stream* state = calloc(1, sizeof *state);
  if (state != NULL) {
    state->config = config;
    state->collection = NEW_BUILDER;
  }
  /* NULL when memory ran out: Envoy 1.40 still calls every hook with it (no check of its
   * own), so each hook below checks; the request is refused with 503 (out_of_memory). */
  return state;
}

EXPORT void envoy_dynamic_module_on_http_filter_destroy(const void* filter) {
  stream* state = (stream*)filter;
  if (state == NULL) {
    return;
  }
  release(&state->collection);
  free(state);
}

static bool header(void* envoy, int type, buffer name, buffer* value) {
  *value = (buffer){NULL, 0};
  return envoy_dynamic_module_callback_http_get_header(envoy, type, name, value, 0, NULL);
}

/* Both false when Envoy could not change the headers: each caller decides what that means
 * (a request or response that cannot be rewritten as it must fails closed). */
static bool set_header(void* envoy, int type, buffer name, buffer value) {
  return envoy_dynamic_module_callback_http_set_header(envoy, type, name, value);
}

static bool remove_header(void* envoy, int type, buffer name) {
  return envoy_dynamic_module_callback_http_set_header(envoy, type, name, (buffer){NULL, 0});
}

static void record(void* envoy, const stream* state, buffer key, buffer value) {
  envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
      envoy, state->config->rest_namespace, key, value);
}

/* A local reply: local_reply_config makes it a ProblemDetails (the request is marked REST). */
static void respond(void* envoy, uint32_t status, buffer detail, http_header* headers,
                    size_t headers_count) {
  envoy_dynamic_module_callback_http_send_response(envoy, status, headers, headers_count, detail,
                                                   LITERAL("netweave_shaper"));
}

static void refuse(void* envoy, uint32_t status, buffer detail) {
  respond(envoy, status, detail, NULL, 0);
}

/* Memory ran out while a check needed it, or Envoy could not give or take what the check
 * needed (a header, a body, a route's list: it cannot fail in Envoy 1.40 while the headers are
 * held, but if it does the check has not been done): refuse rather than let the request pass
 * unchecked or wrongly rewritten (fail closed); 503, as for any overload. */
static void out_of_memory(void* envoy) {
  refuse(envoy, 503, LITERAL(FAILED_CLOSED_DETAIL));
}

/* A string list of the route's metadata (query, flags, methods), fetched once per use: one
 * ABI call per item instead of one per item and lookup. The strings belong to the route. */
typedef struct {
  buffer* items;
  size_t count;
  buffer inline_items[32];
} string_list;

typedef enum {
  ROUTE_LIST_ABSENT, /* the route has no such list: nothing is to be done */
  ROUTE_LIST_FOUND,
  /* Memory ran out for a long list, or Envoy did not give an item it counted: what the list
   * would decide is unknown, and must not be read as "no such list" (unknown query parameters
   * would pass, a PUT without a body would reach the core): the caller answers out_of_memory. */
  ROUTE_LIST_FAILED,
} route_list;

static route_list route_strings(void* envoy, const stream* state, buffer key,
                                string_list* list) {
  list->items = list->inline_items;
  list->count = 0;
  size_t size = 0;
  buffer ns = state->config->route_namespace;
  if (!envoy_dynamic_module_callback_http_get_metadata_list_size(envoy, METADATA_ROUTE, ns, key,
                                                                 &size)) {
    return ROUTE_LIST_ABSENT;
  }
  if (size > sizeof list->inline_items / sizeof list->inline_items[0]) {
    list->items = calloc(size, sizeof *list->items);
    if (list->items == NULL) {
      list->items = list->inline_items;
      return ROUTE_LIST_FAILED;
    }
  }
  for (size_t i = 0; i < size; i++) {
    list->items[i] = (buffer){NULL, 0};
    if (!envoy_dynamic_module_callback_http_get_metadata_list_string(envoy, METADATA_ROUTE, ns,
                                                                     key, i, &list->items[i])) {
      list->count = i; /* (list_free frees it) */
      return ROUTE_LIST_FAILED;
    }
  }
  list->count = size;
  return ROUTE_LIST_FOUND;
}

static bool list_has(const string_list* list, buffer wanted) {
  for (size_t i = 0; i < list->count; i++) {
    if (list->items[i].ptr != NULL && same(list->items[i], wanted)) {
      return true;
    }
  }
  return false;
}

static void list_free(string_list* list) {
  if (list->items != list->inline_items) {
    free(list->items);
  }
  list->items = list->inline_items;
  list->count = 0;
}

/* Whether the route serves `method` (*found); false when that could not be told
 * (ROUTE_LIST_FAILED: the caller answers out_of_memory). */
static bool route_has_method(void* envoy, const stream* state, buffer method, bool* found) {
  string_list methods;
  route_list got = route_strings(envoy, state, LITERAL("methods"), &methods);
  *found = got == ROUTE_LIST_FOUND && list_has(&methods, method);
  list_free(&methods);
  return got != ROUTE_LIST_FAILED;
}

/* Lua's tonumber() on a content-length Envoy has already validated: digits only, leading
 * zeros allowed (Envoy accepts them: 0000000000000000000001048577 is 1048577), and a number
 * beyond 64 bits read as the largest (over every limit), never as "not a number", which
 * would skip the size and empty-body checks. */
static bool parse_length(buffer text, uint64_t* length) {
  if (text.length == 0) {
    return false;
  }
  size_t start = 0;
  while (start + 1 < text.length && text.ptr[start] == '0') {
    start++;
  }
  uint64_t number = 0;
  for (size_t i = start; i < text.length; i++) {
    if (text.ptr[i] < '0' || text.ptr[i] > '9') return false;
    uint64_t digit = (uint64_t)(text.ptr[i] - '0');
    number = number > (UINT64_MAX - digit) / 10 ? UINT64_MAX : number * 10 + digit;
  }
  *length = number;
  return true;
}

/* 413: the body is larger than the API allows (the transcoder's max_request_body_size). */
static void refuse_too_large(void* envoy, const stream* state) {
  char detail[96];
  int detail_length = snprintf(detail, sizeof detail, "the request body is larger than %llu bytes",
                               (unsigned long long)state->config->max_request_body_bytes);
  refuse(envoy, 413, (buffer){detail, (size_t)detail_length});
}

/* The query parameters of `path` this path does not accept are dropped here, before the
 * transcoder (it would bind a parameter named like a path field). The route's metadata lists
 * the accepted names, derived from the request message. Returns false when it answered. */
static bool drop_unknown_query(void* envoy, stream* state, buffer* path, text_builder* cleaned) {
  buffer base, query;
  if (!split_query(*path, &base, &query) || query.length == 0) {
    return true;
  }
  string_list accepted;
  route_list got = route_strings(envoy, state, LITERAL("query"), &accepted);
  if (got != ROUTE_LIST_FOUND) {
    list_free(&accepted);
    if (got == ROUTE_LIST_FAILED) {
      out_of_memory(envoy); /* never every parameter passed on as accepted */
      return false;
    }
    return true;
  }
  text_builder kept = NEW_BUILDER, dropped = NEW_BUILDER, name = NEW_BUILDER;
  size_t dropped_count = 0, kept_count = 0, position = 0;
  buffer first_dropped = {NULL, 0};
  buffer part;
  while (next_part(query, &position, &part)) {
    name.length = 0;
    percent_decode(&name, part_name(part), true);
    if (list_has(&accepted, built(&name))) {
      if (kept_count++ > 0) append(&kept, "&", 1);
      append_text(&kept, part);
      continue;
    }
    /* Shortened to 64 bytes for the core's counter. */
    buffer short_name = {built(&name).ptr, name.length > 64 ? 64 : name.length};
    if (dropped_count++ > 0) append(&dropped, ",", 1);
    if (dropped_count == 1) first_dropped.length = short_name.length;
    append_text(&dropped, short_name);
  }
  bool names_ok = name.ok;
  release(&name);
  list_free(&accepted);
  bool answered = false;
  if (!names_ok || !kept.ok || !dropped.ok) {
    out_of_memory(envoy);
    answered = true;
  } else if (dropped_count > 0) {
    if (state->config->strict_query) {
      /* NETWEAVE_STRICT_QUERY (EnvoyConfig.strict_query_parameters) keeps refusing them. */
      first_dropped.ptr = dropped.data;
      text_builder detail = NEW_BUILDER;
      append_text(&detail, LITERAL("unknown query parameter '"));
      append_text(&detail, first_dropped);
      append_text(&detail, LITERAL("': this path accepts only the O2ims query parameters"));
      if (detail.ok) {
        refuse(envoy, 400, built(&detail));
      } else {
        out_of_memory(envoy); /* (refused all the same; not with a detail cut short) */
      }
      release(&detail);
      answered = true;
    } else {
      /* Liberal in what it accepts (conformance tools and SMOs send extra parameters): an
       * unknown parameter is ignored and counted by the core. */
      append_text(cleaned, base);
      if (kept_count > 0) {
        append(cleaned, "?", 1);
        append_text(cleaned, built(&kept));
      }
      char count[24];
      int count_length = snprintf(count, sizeof count, "%zu", dropped_count);
      /* Without the new :path the dropped parameters would reach the transcoder (which binds
       * one named like a path field); without the count, the client's own value of that
       * header would. Either: 503. */
      if (cleaned->ok &&
          set_header(envoy, REQUEST_HEADERS, LITERAL(":path"), built(cleaned)) &&
          set_header(envoy, REQUEST_HEADERS, state->config->ignored_query_header,
                     (buffer){count, (size_t)count_length})) {
        *path = built(cleaned);
        record(envoy, state, LITERAL("path"), *path);
        record(envoy, state, LITERAL("ignored_query"), built(&dropped));
      } else {
        out_of_memory(envoy);
        answered = true;
      }
    }
  }
  release(&kept);
  release(&dropped);
  return !answered;
}

static bool is_json_media_type(buffer media_type) {
  if (same(media_type, LITERAL("application/json"))) {
    return true;
  }
  /* application/<name>+json, the name of letters, digits, '.' and '-' */
  buffer prefix = LITERAL("application/"), suffix = LITERAL("+json");
  if (media_type.length < prefix.length + 1 + suffix.length ||
      !starts_with(media_type, prefix) ||
      memcmp(media_type.ptr + media_type.length - suffix.length, suffix.ptr, suffix.length) != 0) {
    return false;
  }
  for (size_t i = prefix.length; i < media_type.length - suffix.length; i++) {
    char c = media_type.ptr[i];
    bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '.' || c == '-';
    if (!allowed) return false;
  }
  return true;
}

/* Request bodies are JSON (the transcoder parses any body as JSON, whatever its type): a body
 * declared as something else is not parsed but refused. With 400, not 415: the O2ims
 * conformance tests (CONF 7.3.11) require 400 for an XML body. Returns true when it answered. */
static bool refuse_non_json_body(void* envoy, stream* state, buffer method, bool has_length,
                                 uint64_t length, bool length_is_number, bool end_of_stream) {
  if (!same(method, LITERAL("POST")) && !same(method, LITERAL("PUT")) &&
      !same(method, LITERAL("PATCH"))) {
    return false;
  }
  buffer content_type;
  header(envoy, REQUEST_HEADERS, LITERAL("content-type"), &content_type);
  size_t start = 0;
  while (start < content_type.length && is_space(content_type.ptr[start])) {
    start++;
  }
  size_t end = start;
  while (end < content_type.length && content_type.ptr[end] != ';' &&
         !is_space(content_type.ptr[end])) {
    end++;
  }
  text_builder lowered = NEW_BUILDER;
  for (size_t i = start; i < end; i++) {
    char c = content_type.ptr[i];
    c = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    append(&lowered, &c, 1);
  }
  buffer media_type = built(&lowered);
  /* No content-length: a chunked (HTTP/1.1) or streamed (HTTP/2) body may follow, unless the
   * headers end the stream (HTTP/2 need not send content-length: 0). */
  bool has_body = !end_of_stream && (!has_length || !length_is_number || length > 0);
  bool answered = false;
  bool served = false;
  if (!lowered.ok) {
    /* The media type is not known (a JSON body would get a 400 naming a part of its type). */
    out_of_memory(envoy);
    answered = true;
  } else if (is_json_media_type(media_type)) {
    answered = false;
  } else if (media_type.length == 0 && !has_body) {
    if (same(method, LITERAL("POST"))) {
      answered = false;
    } else if (!route_has_method(envoy, state, method, &served)) {
      out_of_memory(envoy); /* never a PUT or PATCH without a body passed on unchecked */
      answered = true;
    } else if (served) {
      /* PUT and PATCH replace or change a resource: without a body they say nothing, and the
       * transcoder would pass an empty message on as "change nothing" or "clear all". */
      refuse(envoy, 400, LITERAL("this request needs a JSON body"));
      answered = true;
    }
  } else {
    text_builder detail = NEW_BUILDER;
    append_text(&detail, LITERAL("the request body must be JSON (Content-Type: "
                                 "application/json), not '"));
    append_text(&detail, media_type.length ? media_type : LITERAL("none"));
    append(&detail, "'", 1);
    http_header accept_post = {"accept-post", 11, "application/json", 16};
    if (detail.ok) {
      respond(envoy, 400, built(&detail), &accept_post, 1);
    } else {
      out_of_memory(envoy); /* (refused all the same; not with a detail cut short) */
    }
    release(&detail);
    answered = true;
  }
  release(&lowered);
  return answered;
}

/* `?all_fields` (or `?all_fields=`) -> `?all_fields=true` for the boolean flags of this path
 * (the route's metadata lists them): O2ims sends such flags bare, and the transcoder would
 * ignore a query parameter without a value. False when the path could not be completed (the
 * caller answers out_of_memory). */
static bool complete_flags(void* envoy, stream* state, buffer path) {
  buffer base, query;
  if (!split_query(path, &base, &query) || query.length == 0) {
    return true;
  }
  string_list flags;
  route_list got = route_strings(envoy, state, LITERAL("flags"), &flags);
  if (got != ROUTE_LIST_FOUND || flags.count == 0) {
    list_free(&flags);
    return got != ROUTE_LIST_FAILED;
  }
  text_builder rewritten = NEW_BUILDER;
  append_text(&rewritten, base);
  append(&rewritten, "?", 1);
  bool changed = false;
  size_t position = 0, parts = 0;
  buffer part;
  while (next_part(query, &position, &part)) {
    if (parts++ > 0) append(&rewritten, "&", 1);
    /* `all_fields=` too: form encoders write an empty value that way. */
    buffer name = part;
    if (name.length > 0 && name.ptr[name.length - 1] == '=') {
      name.length--;
    }
    if (list_has(&flags, name)) {
      append_text(&rewritten, name);
      append_text(&rewritten, LITERAL("=true"));
      changed = true;
    } else {
      append_text(&rewritten, part);
    }
  }
  list_free(&flags);
  /* A bare flag the transcoder would ignore (`?all_fields` read as false): never that. */
  bool completed = !changed || (rewritten.ok && set_header(envoy, REQUEST_HEADERS,
                                                           LITERAL(":path"), built(&rewritten)));
  release(&rewritten);
  return completed;
}

EXPORT int envoy_dynamic_module_on_http_filter_request_headers(void* envoy, const void* filter,
                                                               bool end_of_stream) {
  stream* state = (stream*)filter;
  if (state == NULL) {
    out_of_memory(envoy);
    return HEADERS_STOP_ITERATION;
  }
  buffer content_type;
  header(envoy, REQUEST_HEADERS, LITERAL("content-type"), &content_type);
  if (starts_with(content_type, LITERAL("application/grpc"))) {
    return HEADERS_CONTINUE; /* native gRPC */
  }
  state->rest = true;
  /* Envoy's own copy: valid until a header changes (only :path does, after its last read).
   * Every request that reaches this filter has one (Envoy's codecs refuse any other but a
   * CONNECT, which the request guard has refused): without it nothing could be checked. */
  buffer path;
  if (!header(envoy, REQUEST_HEADERS, LITERAL(":path"), &path)) {
    out_of_memory(envoy);
    return HEADERS_STOP_ITERATION;
  }
  if (path.ptr == NULL) {
    path = LITERAL("");
  }
  /* Request side records "this is REST"; the access log reads grpc_status from the same
   * namespace, and local_reply_config tells replies made inside the filter chain by it. The
   * path is for the Link header of a paged list: the next page is this URL with a new marker.
   * (A key and value pair has the layout of a header.) */
  http_header marks[2] = {{"rest", 4, "1", 1}, {"path", 4, path.ptr, path.length}};
  envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
      envoy, state->config->rest_namespace, marks, 2);

  /* Both become a ProblemDetails through local_reply_config, like every local reply. Only a
   * path with a byte above 0x7F or a percent escape can decode to invalid UTF-8, and only one
   * with a '.' or a '%' can hold a dot segment: most paths need neither walk. */
  bool plain = true, has_dot = false;
  for (size_t i = 0; i < path.length; i++) {
    unsigned char c = (unsigned char)path.ptr[i];
    if (c == '%' || c >= 0x80) plain = false;
    if (c == '.') has_dot = true;
  }
  int result = HEADERS_CONTINUE;
  text_builder cleaned = NEW_BUILDER;
  bool utf8_ok = true;
  if (!plain) {
    text_builder decoded = NEW_BUILDER;
    percent_decode(&decoded, path, false);
    bool decoded_ok = decoded.ok;
    utf8_ok = decoded_ok && valid_utf8(built(&decoded));
    release(&decoded);
    if (!decoded_ok) {
      out_of_memory(envoy);
      return HEADERS_STOP_ITERATION;
    }
  }
  if (!utf8_ok) {
    refuse(envoy, 400,
           LITERAL("the request path or query is not valid UTF-8 once percent-decoded"));
    result = HEADERS_STOP_ITERATION;
  } else if ((!plain || has_dot) && has_dot_segment(path)) {
    /* Envoy does not resolve them (normalize_path is off, see the template): an id of "." or
     * ".." is never valid, and guessing what the client meant is worse. */
    refuse(envoy, 400, LITERAL("the request path has a '.' or '..' segment"));
    result = HEADERS_STOP_ITERATION;
  } else if (!drop_unknown_query(envoy, state, &path, &cleaned)) {
    result = HEADERS_STOP_ITERATION;
  } else {
    buffer method, length_text;
    bool has_method = header(envoy, REQUEST_HEADERS, LITERAL(":method"), &method);
    char method_text[16];
    size_t method_length = method.length < sizeof method_text ? method.length : 0;
    memcpy(method_text, method.ptr ? method.ptr : "", method_length);
    method = (buffer){method_text, method_length};
    bool has_length = header(envoy, REQUEST_HEADERS, LITERAL("content-length"), &length_text);
    uint64_t length = 0;
    bool length_is_number = has_length && parse_length(length_text, &length);
    bool served = false;
    if (!has_method) {
      out_of_memory(envoy); /* (as :path: every request has one) */
      result = HEADERS_STOP_ITERATION;
    } else if (refuse_non_json_body(envoy, state, method, has_length, length, length_is_number,
                                    end_of_stream)) {
      result = HEADERS_STOP_ITERATION;
    } else if (!complete_flags(envoy, state, path)) {
      out_of_memory(envoy);
      result = HEADERS_STOP_ITERATION;
    } else {
      buffer transfer_encoding;
      bool answered = false;
      if (has_length) {
        /* A declared length is checked at once (Envoy's codecs hold the body to it). */
        if (length_is_number && length > state->config->max_request_body_bytes) {
          refuse_too_large(envoy, state);
          answered = true;
        }
      } else if (header(envoy, REQUEST_HEADERS, LITERAL("transfer-encoding"), &transfer_encoding) ||
                 !same(method, LITERAL("GET"))) {
        /* A body of unknown length is counted as it passes (413 above the limit). */
        if (!end_of_stream) {
          state->request_mode = REQUEST_COUNT;
        }
      }
      /* A PUT or PATCH with an empty body, or a body of JSON `null`: the transcoder would
       * read it as an empty message ("change nothing" or "clear all"), and a merge patch of
       * null would delete the resource, which no O2ims resource allows. Only short bodies are
       * looked at: a content-length of at most NULL_CHECK_BYTES, or none at all, whatever the
       * framing (HTTP/2: END_STREAM on the headers, trailers without DATA, empty DATA
       * frames; the body's end decides, finish_request_body). */
      bool empty = end_of_stream || (length_is_number && length == 0);
      bool short_body = empty || !has_length || (length_is_number && length <= NULL_CHECK_BYTES);
      if (!answered && (same(method, LITERAL("PUT")) || same(method, LITERAL("PATCH"))) &&
          short_body && !route_has_method(envoy, state, method, &served)) {
        out_of_memory(envoy); /* never an empty or null body passed on unchecked */
        answered = true;
      } else if (!answered && served) {
        if (empty) {
          refuse(envoy, 400, LITERAL("this request needs a JSON body"));
          answered = true;
        } else {
          state->request_mode = REQUEST_CHECK_NULL;
          state->length_unknown = !has_length;
        }
      }
      if (answered) {
        state->request_mode = REQUEST_PASS;
      }
      if (answered || state->request_mode == REQUEST_CHECK_NULL) {
        result = HEADERS_STOP_ITERATION; /* refused, or held until the body is looked at */
      }
    }
  }
  release(&cleaned);
  return result;
}

/* The whole body of the stream so far: what was buffered, then what just arrived. `out->ok`
 * turns false when memory ran out or Envoy did not give the chunks it counted: then the body
 * is not known (never read as empty). */
static void whole_body(void* envoy, int received_type, int buffered_type, bool received_is_buffered,
                       text_builder* out) {
  int types[2] = {buffered_type, received_type};
  for (int t = 0; t < (received_is_buffered ? 1 : 2); t++) {
    size_t count = envoy_dynamic_module_callback_http_get_body_chunks_size(envoy, types[t]);
    if (count == 0) continue;
    buffer* chunks = calloc(count, sizeof *chunks);
    if (chunks == NULL) {
      out->ok = false;
      return;
    }
    if (envoy_dynamic_module_callback_http_get_body_chunks(envoy, types[t], chunks)) {
      for (size_t i = 0; i < count; i++) {
        append(out, chunks[i].ptr, chunks[i].length);
      }
    } else {
      out->ok = false;
    }
    free(chunks);
    if (!out->ok) {
      return;
    }
  }
}

static bool is_json_null(buffer body) {
  size_t i = 0, end = body.length;
  while (i < end && is_space(body.ptr[i])) i++;
  while (end > i && is_space(body.ptr[end - 1])) end--;
  return end - i == 4 && memcmp(body.ptr + i, "null", 4) == 0;
}

/* The end of a request body this filter held back. Returns true when it answered: a 400 for
 * an empty body or JSON null, a 503 when the body could not be looked at (out_of_memory: never
 * passed on unchecked). */
static bool finish_request_body(void* envoy, stream* state, bool received) {
  request_body_mode mode = state->request_mode;
  state->request_mode = REQUEST_PASS;
  if (mode != REQUEST_CHECK_NULL) {
    return false;
  }
  text_builder body = NEW_BUILDER;
  bool received_is_buffered =
      !received || envoy_dynamic_module_callback_http_received_buffered_request_body(envoy);
  whole_body(envoy, RECEIVED_REQUEST_BODY, BUFFERED_REQUEST_BODY, received_is_buffered, &body);
  bool copied = body.ok;
  bool empty = copied && body.length == 0;
  bool refused = !copied || empty || is_json_null(built(&body));
  release(&body);
  if (!copied) {
    out_of_memory(envoy);
  } else if (empty) {
    /* No content-length and no byte before the end (trailers, empty DATA frames). */
    refuse(envoy, 400, LITERAL("this request needs a JSON body"));
  } else if (refused) {
    refuse(envoy, 400, LITERAL("the request body must be a JSON object, not null"));
  }
  return refused;
}

EXPORT int envoy_dynamic_module_on_http_filter_request_body(void* envoy, const void* filter,
                                                            bool end_of_stream) {
  stream* state = (stream*)filter;
  if (state == NULL || state->request_mode == REQUEST_PASS) {
    return BODY_CONTINUE;
  }
  /* What arrived: new bytes, or (when Envoy hands over the stream's buffered body) all that
   * was held so far, which this filter counted in part. */
  uint64_t received =
      envoy_dynamic_module_callback_http_get_body_size(envoy, RECEIVED_REQUEST_BODY);
  if (envoy_dynamic_module_callback_http_received_buffered_request_body(envoy)) {
    state->body_bytes = received > state->body_bytes ? received : state->body_bytes;
  } else {
    state->body_bytes += received;
  }
  if (state->body_bytes > state->config->max_request_body_bytes) {
    /* Before the end of the body, so the transcoder has not passed a message on: the core
     * sees at most a call cancelled before its request (the local reply resets it). */
    state->request_mode = REQUEST_PASS;
    refuse_too_large(envoy, state);
    return BODY_STOP_NO_BUFFER;
  }
  if (state->request_mode == REQUEST_CHECK_NULL && state->length_unknown && !end_of_stream &&
      state->body_bytes > NULL_CHECK_BYTES) {
    /* A body of unknown length is looked at only while it is short: past NULL_CHECK_BYTES it
     * is not null, and goes on (the held headers and body with it), counted. */
    state->request_mode = REQUEST_COUNT;
  }
  if (state->request_mode == REQUEST_COUNT) {
    return BODY_CONTINUE;
  }
  if (!end_of_stream) {
    return BODY_STOP_AND_BUFFER;
  }
  return finish_request_body(envoy, state, true) ? BODY_STOP_NO_BUFFER : BODY_CONTINUE;
}

EXPORT int envoy_dynamic_module_on_http_filter_request_trailers(void* envoy, const void* filter) {
  stream* state = (stream*)filter;
  if (state != NULL && state->request_mode != REQUEST_PASS &&
      finish_request_body(envoy, state, false)) {
    /* Trailers end the body: what is buffered is all of it. A refusal has answered: nothing
     * of the request goes on. */
    return TRAILERS_STOP_ITERATION;
  }
  return TRAILERS_CONTINUE;
}

/* --- response --------------------------------------------------------------------------- */

/* The HTTP statuses the transcoder maps gRPC codes to (a NULL ptr for any other: titled
 * "Error"). */
static buffer reason_phrase(int status) {
  switch (status) {
    case 400: return LITERAL("Bad Request");
    case 401: return LITERAL("Unauthorized");
    case 403: return LITERAL("Forbidden");
    case 404: return LITERAL("Not Found");
    case 409: return LITERAL("Conflict");
    case 412: return LITERAL("Precondition Failed");
    case 429: return LITERAL("Too Many Requests");
    case 431: return LITERAL("Request Header Fields Too Large");
    case 499: return LITERAL("Client Closed Request");
    case 500: return LITERAL("Internal Server Error");
    case 501: return LITERAL("Not Implemented");
    case 503: return LITERAL("Service Unavailable");
    case 504: return LITERAL("Gateway Timeout");
    default: return (buffer){NULL, 0};
  }
}

/* FAILED_PRECONDITION means "the stored state refuses this"; the transcoder makes every one a
 * 400. These ErrorInfo reasons of the core (server/monitoring_v1.py) are conflicts (409) or a
 * failed If-Match (412) in HTTP terms. 0: not one of them. */
static int precondition_status(buffer reason) {
  if (same(reason, LITERAL("ETAG_MISMATCH"))) return 412;
  if (same(reason, LITERAL("ALARM_ALREADY_ACKNOWLEDGED")) ||
      same(reason, LITERAL("ALARM_ALREADY_CLEARED")) ||
      same(reason, LITERAL("ALARM_NOT_MANUALLY_CLEARABLE")) ||
      same(reason, LITERAL("ALARM_CHANGING"))) {
    return 409;
  }
  return 0;
}

#define GRPC_UNKNOWN "2"
#define GRPC_RESOURCE_EXHAUSTED "8"
#define GRPC_FAILED_PRECONDITION "9"
#define GRPC_UNIMPLEMENTED "12"

/* Headers of a REST response that never reach the client. */
static bool stripped(buffer name) {
  return starts_with(name, LITERAL("x-o2ims-")) || starts_with(name, LITERAL("grpc-")) ||
         same(name, LITERAL("x-http-status"));
}

/* The grpc-* headers a REST client never sees (any other grpc-* is not internal), with their
 * lengths (a static initializer cannot use LITERAL, a compound literal). */
#define NAME(text) {(text), sizeof(text) - 1}
static const buffer STRIPPED_GRPC[] = {
    NAME("grpc-status"),          NAME("grpc-message"),  NAME("grpc-status-details-bin"),
    NAME("grpc-accept-encoding"), NAME("grpc-encoding"),
};
#undef NAME
#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

static bool is_stripped_grpc_header(buffer name) {
  for (size_t i = 0; i < COUNT(STRIPPED_GRPC); i++) {
    if (same(name, STRIPPED_GRPC[i])) {
      return true;
    }
  }
  return false;
}

/* `path` with its nextpage_opaque_marker replaced by `marker` (the next page's URL). */
static void next_page_path(text_builder* out, buffer path, buffer marker) {
  buffer base, query;
  split_query(path, &base, &query);
  append_text(out, base);
  append(out, "?", 1);
  size_t position = 0;
  buffer part;
  while (next_part(query, &position, &part)) {
    if (!same(part_name(part), LITERAL("nextpage_opaque_marker"))) {
      append_text(out, part);
      append(out, "&", 1);
    }
  }
  /* The marker is base64url: safe in a query string as it is. */
  append_text(out, LITERAL("nextpage_opaque_marker="));
  append_text(out, marker);
}

/* What the response headers say, copied before any of them changes. */
typedef struct {
  text_builder collection, status_override, next_marker, internal_names;
  size_t internal_count;
  bool has_collection, has_override, has_marker;
  int status;
  bool content_type_json, content_type_grpc, content_type_empty;
} response_facts;

/* False when memory ran out or Envoy did not give the headers it counted: then the facts are
 * incomplete (the headers cannot be shaped). */
static bool read_response_headers(void* envoy, stream* state, response_facts* facts) {
  size_t count = envoy_dynamic_module_callback_http_get_headers_size(envoy, RESPONSE_HEADERS);
  http_header local[48];
  http_header* headers = count <= 48 ? local : calloc(count, sizeof *headers);
  if (headers == NULL) {
    return false;
  }
  if (!envoy_dynamic_module_callback_http_get_headers(envoy, RESPONSE_HEADERS, headers)) {
    /* Never read as "no headers": the response would pass unshaped (internal headers too). */
    if (headers != local) {
      free(headers);
    }
    return false;
  }
  bool has_x_http_status = false;
  text_builder x_http_status = NEW_BUILDER;
  facts->content_type_empty = true;
  for (size_t i = 0; i < count; i++) {
    buffer name = {headers[i].key_ptr, headers[i].key_length};
    buffer value = {headers[i].value_ptr, headers[i].value_length};
    if (same(name, LITERAL(":status"))) {
      int status = 0;
      for (size_t k = 0; k < value.length && k < 3 && value.ptr[k] >= '0' && value.ptr[k] <= '9';
           k++) {
        status = status * 10 + (value.ptr[k] - '0');
      }
      facts->status = value.length > 0 && value.length <= 3 ? status : 0;
      continue;
    }
    if (same(name, LITERAL("content-type"))) {
      facts->content_type_empty = value.length == 0;
      facts->content_type_json = starts_with(value, LITERAL("application/json"));
      facts->content_type_grpc = starts_with(value, LITERAL("application/grpc"));
      continue;
    }
    if (!stripped(name)) {
      continue;
    }
    if (same(name, LITERAL("grpc-status"))) {
      /* For the access log: Envoy's own %GRPC_STATUS% is derived from the HTTP status once
       * the transcoder has converted an error (NOT_FOUND would be logged as 12). */
      record(envoy, state, LITERAL("grpc_status"), value);
    } else if (same(name, LITERAL("x-o2ims-collection")) && !facts->has_collection) {
      facts->has_collection = true;
      append_text(&facts->collection, value);
    } else if (same(name, LITERAL("x-o2ims-http-status")) && !facts->has_override) {
      facts->has_override = true;
      append_text(&facts->status_override, value);
    } else if (same(name, LITERAL("x-http-status")) && !has_x_http_status) {
      /* Pre-`x-o2ims-` spelling of the status override; honoured, and never leaked either. */
      has_x_http_status = true;
      append_text(&x_http_status, value);
    } else if (same(name, LITERAL("x-o2ims-next-page-token")) && !facts->has_marker) {
      facts->has_marker = true;
      append_text(&facts->next_marker, value);
    }
    if (starts_with(name, LITERAL("grpc-")) && !is_stripped_grpc_header(name)) {
      continue; /* other grpc-* headers are not internal */
    }
    append(&facts->internal_names, name.ptr, name.length);
    append(&facts->internal_names, "\n", 1);
    facts->internal_count++;
  }
  if (!facts->has_override && has_x_http_status) {
    facts->has_override = true;
    append_text(&facts->status_override, built(&x_http_status));
  }
  bool copied = x_http_status.ok && facts->collection.ok && facts->status_override.ok &&
                facts->next_marker.ok && facts->internal_names.ok;
  release(&x_http_status);
  if (headers != local) {
    free(headers);
  }
  return copied;
}

/* Memory ran out while a response was being shaped (the list's bare array, the
 * ProblemDetails, the Link header, the copy of what the headers say...), or Envoy did not give
 * or take what shaping needs (the headers, the body, a header change): the client must not
 * get the response as the core sent it (a 200 with a wrongly shaped body, a google.rpc.Status
 * error, internal headers). So the response fails closed, with the request side's 503
 * (out_of_memory). Envoy's sendLocalReply, which send_response is, decides how:
 *   - response headers not sent yet: a local reply built anew (none of the core's headers or
 *     body). This is every case here: in the response-headers hook they have not gone on yet,
 *     and the shaper holds them (HEADERS_STOP_ITERATION) for as long as it has a body to
 *     change, so they are never sent before finish_response_body has built the new one. As
 *     the core's response headers already exist, Envoy takes its sendDirectLocalReply path
 *     (FilterManager::sendLocalReply in source/common/http/filter_manager.cc): the reply goes
 *     straight to the codec, past the encoder filters (this one included), not through the
 *     filter chain as a reply from the request path does. That path still runs
 *     local_reply_config's rewrite (local_reply_.rewrite), so the client should get the
 *     ProblemDetails of a REST request; read in the Envoy source the search index holds, not
 *     pinned to 1.40, and not exercised by a test (memory cannot be made to run out here).
 *   - already sent (not reached from this filter, see above): Envoy resets the stream, so the
 *     client sees an aborted response rather than a wrongly shaped one.
 * The hook that called it then stops iteration (nothing of the original goes on). */
static void response_out_of_memory(void* envoy, stream* state) {
  state->response_mode = RESPONSE_PASS;
  release(&state->collection);
  out_of_memory(envoy);
}

EXPORT int envoy_dynamic_module_on_http_filter_response_headers(void* envoy, const void* filter,
                                                                bool end_of_stream) {
  stream* state = (stream*)filter;
  if (state == NULL) {
    return HEADERS_CONTINUE; /* its request was refused (out_of_memory) */
  }
  if (!state->rest) {
    /* Marked by another filter (the request guard's refusals) or native gRPC. */
    buffer rest;
    if (!envoy_dynamic_module_callback_http_get_metadata_string(
            envoy, METADATA_DYNAMIC, state->config->rest_namespace, LITERAL("rest"), &rest) ||
        !same(rest, LITERAL("1"))) {
      return HEADERS_CONTINUE; /* native gRPC: leave headers, body and trailers alone */
    }
    state->rest = true;
  }
  response_facts facts = {.collection = NEW_BUILDER,
                          .status_override = NEW_BUILDER,
                          .next_marker = NEW_BUILDER,
                          .internal_names = NEW_BUILDER,
                          .content_type_empty = true};
  int result = HEADERS_CONTINUE;
  if (!read_response_headers(envoy, state, &facts)) {
    /* Without all of them it cannot tell what to strip, promote or unwrap. */
    response_out_of_memory(envoy, state);
    result = HEADERS_STOP_ITERATION;
    goto done;
  }
  /* The names were copied: removing them now cannot disturb what was read. */
  buffer names = built(&facts.internal_names);
  for (size_t start = 0; start < names.length;) {
    const char* end = memchr(names.ptr + start, '\n', names.length - start);
    if (end == NULL) {
      break; /* (not reached: each name ends with one) */
    }
    size_t length = (size_t)(end - (names.ptr + start));
    if (!remove_header(envoy, RESPONSE_HEADERS, (buffer){names.ptr + start, length})) {
      response_out_of_memory(envoy, state); /* an internal header would leak */
      result = HEADERS_STOP_ITERATION;
      goto done;
    }
    start += length + 1;
  }

  int status = facts.status;
  /* Only a plain success may be promoted (201 Created, 202 Accepted...): an error or a status
   * Envoy chose must never be masked by what the core asked for. */
  buffer override = built(&facts.status_override);
  if (status == 200 && facts.has_override && override.length == 3 && override.ptr[0] == '2' &&
      override.ptr[1] >= '0' && override.ptr[1] <= '9' && override.ptr[2] >= '0' &&
      override.ptr[2] <= '9') {
    status = 200 + (override.ptr[1] - '0') * 10 + (override.ptr[2] - '0');
    if (!set_header(envoy, RESPONSE_HEADERS, LITERAL(":status"), override)) {
      response_out_of_memory(envoy, state); /* a 201 Created must not pass as a 200 */
      result = HEADERS_STOP_ITERATION;
      goto done;
    }
  }
  bool success = status >= 200 && status < 300;
  if (success && facts.has_marker && facts.next_marker.length > 0) {
    /* SOL013 paging: the client follows rel="next" until it is absent. */
    buffer path = {NULL, 0};
    /* Recorded by the request side of every REST request that reaches the core: without it
     * the Link would point nowhere (failed closed below, as when memory runs out). */
    bool has_path = envoy_dynamic_module_callback_http_get_metadata_string(
        envoy, METADATA_DYNAMIC, state->config->rest_namespace, LITERAL("path"), &path);
    text_builder link = NEW_BUILDER;
    text_builder path_copy = NEW_BUILDER;
    append_text(&path_copy, path);
    append(&link, "<", 1);
    next_page_path(&link, built(&path_copy), built(&facts.next_marker));
    append_text(&link, LITERAL(">; rel=\"next\""));
    bool linked = has_path && link.ok && path_copy.ok &&
                  envoy_dynamic_module_callback_http_add_header(envoy, RESPONSE_HEADERS,
                                                                LITERAL("link"), built(&link));
    release(&link);
    release(&path_copy);
    if (!linked) {
      /* Without its Link the client would take this page for the last one. */
      response_out_of_memory(envoy, state);
      result = HEADERS_STOP_ITERATION;
      goto done;
    }
  }
  if (success) {
    bool empty = false;
    /* False only when the route has no such key (then not Empty): nothing to check. */
    envoy_dynamic_module_callback_http_get_metadata_bool(
        envoy, METADATA_ROUTE, state->config->route_namespace, LITERAL("empty"), &empty);
    /* The core may name the collection itself; otherwise the route knows it from the proto
     * (only a success can be a list, so only a success looks). */
    buffer collection;
    if (!facts.has_collection &&
        envoy_dynamic_module_callback_http_get_metadata_string(
            envoy, METADATA_ROUTE, state->config->route_namespace, LITERAL("collection"),
            &collection)) {
      facts.has_collection = true;
      append_text(&facts.collection, collection);
      if (!facts.collection.ok) {
        response_out_of_memory(envoy, state); /* it could not unwrap the list */
        result = HEADERS_STOP_ITERATION;
        goto done;
      }
    }
    /* Each content-type change goes with the body this filter makes: if Envoy cannot make
     * it, the response fails closed (as when memory runs out). */
    bool typed = true;
    if (empty || status == 204) {
      typed = remove_header(envoy, RESPONSE_HEADERS, LITERAL("content-type"));
      state->response_mode = RESPONSE_EMPTY;
    } else if (facts.has_collection) {
      typed = set_header(envoy, RESPONSE_HEADERS, LITERAL("content-type"),
                         LITERAL("application/json"));
      state->response_mode = RESPONSE_LIST;
      /* The name, with its length, for the body: the copy moves over (no new allocation). */
      release(&state->collection);
      state->collection = facts.collection;
      facts.collection = NEW_BUILDER;
    } else if (facts.content_type_empty || facts.content_type_grpc) {
      typed = set_header(envoy, RESPONSE_HEADERS, LITERAL("content-type"),
                         LITERAL("application/json"));
    }
    if (!typed) {
      response_out_of_memory(envoy, state);
      result = HEADERS_STOP_ITERATION;
      goto done;
    }
  } else if (status >= 400 && facts.content_type_json) {
    /* With convert_grpc_status the transcoder's JSON error body is a google.rpc.Status
     * {"code":N,"message":"...","details":[...]}. (Envoy's own replies are not JSON here:
     * local_reply_config has already made them application/problem+json.) An error is a
     * trailers-only gRPC response, so its code is only in that body. */
    if (!set_header(envoy, RESPONSE_HEADERS, LITERAL("content-type"),
                    LITERAL("application/problem+json"))) {
      response_out_of_memory(envoy, state);
      result = HEADERS_STOP_ITERATION;
      goto done;
    }
    state->response_mode = RESPONSE_ERROR;
    state->status = status;
  }
  if (state->response_mode != RESPONSE_PASS) {
    if (end_of_stream) {
      /* No body to change (the transcoder always sends one; nothing to hold back). */
      state->response_mode = RESPONSE_PASS;
    } else {
      /* Held until the body is complete: the body decides the status of an error, and the
       * new body's content-length goes into these headers. (Also what lets a body that cannot
       * be built end in a 503, not in the original body: response_out_of_memory.) */
      result = HEADERS_STOP_ITERATION;
    }
  }
done:
  release(&facts.collection);
  release(&facts.status_override);
  release(&facts.next_marker);
  release(&facts.internal_names);
  return result;
}

/* How to present an upstream (core) error: HTTP status, title, and a fixed detail (NULL: the
 * core's own message is the detail). */
static int upstream_problem(int status, bool has_code, buffer code, buffer message, bool has_reason,
                            buffer reason, buffer* title, buffer* fixed_detail) {
  *fixed_detail = (buffer){NULL, 0};
  if (has_code && same(code, LITERAL(GRPC_FAILED_PRECONDITION)) && has_reason &&
      precondition_status(reason) != 0) {
    int mapped = precondition_status(reason);
    *title = reason_phrase(mapped);
    return mapped;
  }
  if (has_code && same(code, LITERAL(GRPC_UNIMPLEMENTED))) {
    /* The descriptor set publishes a method the core does not serve (an API version this
     * deployment does not run): for O2ims that path does not exist. */
    *title = LITERAL("Not Found");
    *fixed_detail = LITERAL("no such resource: this gateway does not serve it");
    return 404;
  }
  if (has_code && same(code, LITERAL(GRPC_RESOURCE_EXHAUSTED)) &&
      find(message, 0, LITERAL("metadata size")) >= 0) {
    /* The core's gRPC library refused the request headers as too large: the client's request
     * is too big, not rate limited. */
    *title = reason_phrase(431);
    *fixed_detail = LITERAL("the request headers (path and query included) are too large");
    return 431;
  }
  *title = reason_phrase(status);
  if (title->ptr == NULL) {
    *title = LITERAL("Error");
  }
  if (has_code && same(code, LITERAL(GRPC_UNKNOWN))) {
    /* gRPC's answer to an unhandled exception in the core; its text is internal. */
    *fixed_detail = LITERAL("the gateway failed to process the request");
  }
  return status;
}

/* The first `"code":<digits>` of a google.rpc.Status body. */
static bool status_code(buffer body, buffer* code) {
  for (long at = find(body, 0, LITERAL("\"code\":")); at >= 0;
       at = find(body, (size_t)at + 1, LITERAL("\"code\":"))) {
    size_t start = (size_t)at + 7, end = start;
    while (end < body.length && body.ptr[end] >= '0' && body.ptr[end] <= '9') {
      end++;
    }
    if (end > start) {
      *code = (buffer){body.ptr + start, end - start};
      return true;
    }
  }
  return false;
}

/* The ProblemDetails of an upstream error body; may change the held headers. False when
 * Envoy could not change them (the status or the challenge would not match the body). */
static bool problem_body(void* envoy, stream* state, buffer body, text_builder* out) {
  buffer code = {NULL, 0}, message = {"", 0}, reason = {NULL, 0};
  bool has_code = status_code(body, &code);
  if (has_code) {
    record(envoy, state, LITERAL("grpc_status"), code);
  }
  bool has_message = raw_json_string(body, "message", &message);
  /* The first ErrorInfo's reason (the core puts ErrorInfo first in the details). */
  bool has_reason = raw_json_string(body, "reason", &reason);
  buffer title, fixed_detail;
  int problem_status = upstream_problem(state->status, has_code, code,
                                        has_message ? message : LITERAL(""), has_reason, reason,
                                        &title, &fixed_detail);
  char digits[16];
  int digits_length = snprintf(digits, sizeof digits, "%d", problem_status);
  buffer status_text = {digits, (size_t)digits_length};
  if (problem_status != state->status &&
      !set_header(envoy, RESPONSE_HEADERS, LITERAL(":status"), status_text)) {
    return false;
  }
  if (problem_status == 401 &&
      !set_header(envoy, RESPONSE_HEADERS, LITERAL("www-authenticate"),
                  state->config->unauthorized_challenge)) {
    /* The core refused a caller with neither certificate nor token (RFC 7235: a 401 names the
     * scheme to use). */
    return false;
  }
  buffer detail = fixed_detail.ptr ? fixed_detail : message;
  if (!fixed_detail.ptr && (!has_message || message.length == 0)) {
    detail = title;
  }
  append_text(out, LITERAL("{\"status\":"));
  append_text(out, status_text);
  append_text(out, LITERAL(",\"title\":\""));
  append_text(out, title);
  append_text(out, LITERAL("\",\"detail\":\""));
  append_text(out, detail);
  append_text(out, LITERAL("\"}"));
  return true;
}

/* The end of a response body this filter held back: the new body replaces the old. Returns
 * true when it could not be built (memory ran out) and the response failed closed instead
 * (response_out_of_memory: a 503, as the headers are still held). */
static bool finish_response_body(void* envoy, stream* state, bool received) {
  response_body_mode mode = state->response_mode;
  state->response_mode = RESPONSE_PASS;
  bool received_is_buffered =
      !received || envoy_dynamic_module_callback_http_received_buffered_response_body(envoy);
  text_builder body = NEW_BUILDER, replacement = NEW_BUILDER;
  if (mode != RESPONSE_EMPTY) {
    whole_body(envoy, RECEIVED_RESPONSE_BODY, BUFFERED_RESPONSE_BODY, received_is_buffered, &body);
  }
  if (!body.ok) {
    /* Not all of the body could be copied: the list would be unwrapped from a part of it, the
     * error's code and message looked for in a part. */
  } else if (mode == RESPONSE_LIST) {
    buffer token;
    if (raw_json_string(built(&body), "nextPageToken", &token) && token.length > 0) {
      /* Kept for the paging step (Link: rel="next"); never part of the O2ims body. */
      record(envoy, state, LITERAL("next_page_token"), token);
    }
    append_text(&replacement, bare_array(built(&body), built(&state->collection)));
  } else if (mode == RESPONSE_ERROR && !problem_body(envoy, state, built(&body), &replacement)) {
    replacement.ok = false; /* (failed closed below, as when memory runs out) */
  }
  bool built_ok = body.ok && replacement.ok;
  /* Envoy not taking the new body (drain, append) or its length: the client would get the old
   * body, or the new one with a wrong content-length. Failed closed too (the headers are still
   * held: the 503 replaces all of it). */
  if (built_ok) {
    int types[2] = {BUFFERED_RESPONSE_BODY, RECEIVED_RESPONSE_BODY};
    for (int t = 0; t < (received_is_buffered ? 1 : 2) && built_ok; t++) {
      size_t size = envoy_dynamic_module_callback_http_get_body_size(envoy, types[t]);
      if (size > 0) {
        built_ok = envoy_dynamic_module_callback_http_drain_body(envoy, types[t], size);
      }
    }
    /* What just arrived is moved behind the buffered body when the filter continues. */
    int target = received_is_buffered ? BUFFERED_RESPONSE_BODY : RECEIVED_RESPONSE_BODY;
    if (built_ok && replacement.length > 0) {
      built_ok = envoy_dynamic_module_callback_http_append_body(envoy, target, built(&replacement));
    }
    char length[24];
    int length_digits = snprintf(length, sizeof length, "%zu", replacement.length);
    built_ok = built_ok && set_header(envoy, RESPONSE_HEADERS, LITERAL("content-length"),
                                      (buffer){length, (size_t)length_digits});
  }
  release(&body);
  release(&replacement);
  if (!built_ok) {
    /* The bare array or the ProblemDetails could not be built, or Envoy did not take it:
     * never the original body (a 200 with the list wrapped, a google.rpc.Status as
     * application/problem+json). */
    response_out_of_memory(envoy, state);
    return true;
  }
  return false;
}

EXPORT int envoy_dynamic_module_on_http_filter_response_body(void* envoy, const void* filter,
                                                             bool end_of_stream) {
  stream* state = (stream*)filter;
  if (state == NULL || state->response_mode == RESPONSE_PASS) {
    return BODY_CONTINUE;
  }
  if (!end_of_stream) {
    return BODY_STOP_AND_BUFFER;
  }
  /* After a 503 (out of memory) nothing of the original body goes on. */
  return finish_response_body(envoy, state, true) ? BODY_STOP_NO_BUFFER : BODY_CONTINUE;
}

/* The response trailers of a REST stream without the names a REST client never sees (the
 * headers' rule, `stripped`): over HTTP/2 the core's grpc-status and grpc-message would
 * otherwise reach the client as trailers of every response (the transcoder passes a
 * success's trailers on). False when memory ran out or Envoy did not give or take them: the
 * headers have gone (nothing to fail closed to), so the trailers go as they are. */
static bool strip_response_trailers(void* envoy) {
  size_t count = envoy_dynamic_module_callback_http_get_headers_size(envoy, RESPONSE_TRAILERS);
  if (count == 0) {
    return true;
  }
  http_header local[16];
  http_header* trailers = count <= 16 ? local : calloc(count, sizeof *trailers);
  if (trailers == NULL) {
    return false;
  }
  text_builder names = NEW_BUILDER;
  bool ok = envoy_dynamic_module_callback_http_get_headers(envoy, RESPONSE_TRAILERS, trailers);
  for (size_t i = 0; ok && i < count; i++) {
    buffer name = {trailers[i].key_ptr, trailers[i].key_length};
    if (stripped(name) && (!starts_with(name, LITERAL("grpc-")) || is_stripped_grpc_header(name))) {
      append(&names, name.ptr, name.length);
      append(&names, "\n", 1);
    }
  }
  if (trailers != local) {
    free(trailers);
  }
  ok = ok && names.ok;
  /* The names were copied: removing them now cannot disturb what was read. */
  buffer list = built(&names);
  for (size_t start = 0; ok && start < list.length;) {
    const char* end = memchr(list.ptr + start, '\n', list.length - start);
    size_t length = end ? (size_t)(end - (list.ptr + start)) : list.length - start;
    ok = remove_header(envoy, RESPONSE_TRAILERS, (buffer){list.ptr + start, length});
    start += length + 1;
  }
  release(&names);
  return ok;
}

EXPORT int envoy_dynamic_module_on_http_filter_response_trailers(void* envoy,
                                                                 const void* filter) {
  stream* state = (stream*)filter;
  if (state == NULL || !state->rest) {
    return TRAILERS_CONTINUE; /* native gRPC: its trailers are its status */
  }
  if (state->response_mode != RESPONSE_PASS &&
      finish_response_body(envoy, state, false)) { /* trailers end the body */
    return TRAILERS_STOP_ITERATION; /* it answered 503 (out of memory) */
  }
  strip_response_trailers(envoy);
  return TRAILERS_CONTINUE;
}
