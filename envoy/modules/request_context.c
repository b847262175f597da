/*
 * netweave request context: an Envoy HTTP filter (dynamic module), the FIRST HTTP filter of
 * the edge, so every request that reaches the filter chain gets its context before any filter
 * can refuse it, and, being first, it is the last to see every reply on the way out.
 * It replaces two Lua filters (request_context.lua + request_guard.lua) and a header_mutation
 * filter (netweave.strip_identity_headers): the same work without a Lua coroutine, a filter
 * of its own or a CEL expression per call (docs/performance.md, "The edge's cost").
 *
 * Identity headers: whatever a client sent under a name only Envoy may assert (the stripped
 *   headers of rest_facade/envoy_config.py: the verified certificate, the token's claims, the
 *   edge's mark...) is dropped first, before any filter reads the request. Envoy sets the
 *   verified ones itself later (jwt_authn; the virtual host's request_headers_to_add).
 * Correlation id (issue 16; the header contract lives in netweave/headers.py):
 *   the client's x-correlation-id if well formed, else its x-request-id if well formed, else
 *   the x-request-id Envoy generated for this request. A malformed client value is never
 *   forwarded. The id is sent to the core as x-correlation-id (the transcoder makes it gRPC
 *   metadata) and as x-request-id (one id in every log line), and recorded for the access
 *   logs (dynamic metadata <context namespace>:correlation_id). Envoy regenerates x-request-id
 *   for every external request, so the client's value arrives here under the client request
 *   id header, copied there by the connection manager's early header mutation.
 * Route template: the O2ims path template the request matched (the route metadata
 *   rest_facade/envoy_routes.py writes under this filter's name), recorded as
 *   <context namespace>:route before the transcoder re-routes the request to its gRPC method.
 * Request guard: then two kinds of request that are not API calls are refused before any other
 *   filter reads them:
 *   * CONNECT (this edge is an API, not a proxy): 405 with an empty Allow at once, instead of a
 *     stream waiting for a body until a timeout.
 *   * a credential in the query string (?access_token=, ?api_key=, ... in any case, and
 *     percent-encoded names too), for REST callers: 400. The value is replaced in :path first
 *     (the edge audit log records :path) and the query as recorded for the main access log
 *     (<guard namespace>:query) is the redacted one, so no log line ever holds it.
 *   Native gRPC callers (content-type application/grpc*) send no query string; they pass.
 *   Both refusals are local replies (send_response is Envoy's sendLocalReply), so
 *   local_reply_config turns them into ProblemDetails with the body below as detail; the REST
 *   mark (<rest namespace>:rest = "1", as the shaper sets it) tells it that the body says what
 *   was wrong. They carry the correlation id themselves: a filter's own reply does not pass
 *   through its own response hook.
 * On the way out: every reply of a later filter or of the core (upstream, jwt_authn, the rate
 *   limiter, the routes, the transcoder, the shaper) gets the request's correlation id (as
 *   recorded in the dynamic metadata), replacing any, and a 429 without a Retry-After gets
 *   one: the limiter's x-ratelimit-reset if it is a whole number of seconds of at least 1,
 *   else 1 (Retry-After is whole seconds, and 0 would let a client spin).
 *
 * Configuration (rendered by rest_facade/envoy_config.py, request_context_filter): filter_name
 * "request_context", filter_config a google.protobuf.StringValue of `key=value` lines, every key
 * below exactly once: the header names and the well-formed id test of netweave/headers.py (the
 * characters allowed first and after, and the maximum length), the metadata namespaces and the
 * stripped headers (lower-case names, comma-separated). The credential parameter names, the
 * redaction text and the rate limiter's reset header are this filter's own.
 *
 * ABI: the slice of Envoy's dynamic-module ABI both HTTP filters use is declared in
 * http_filter.h (with the hooks Envoy requires and this filter does not use);
 * rest_facade/envoy_modules.py builds the module with `cc`.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_filter.h"

/* --- configuration ---------------------------------------------------------------------- */

#define FILTER_NAME "request_context"
/* The longest correlation id a configuration may allow (the id is copied on the stack). */
#define ID_LENGTH_LIMIT 1024
/* The most stripped headers a configuration may name. */
#define STRIPPED_LIMIT 16

typedef struct {
  buffer correlation_id_header;
  buffer request_id_header;
  buffer client_request_id_header;
  buffer context_namespace; /* dynamic metadata written, and route metadata read */
  buffer guard_namespace;
  buffer rest_namespace;
  bool id_first[256]; /* the bytes an id may start with */
  bool id_rest[256];  /* ... and continue with */
  size_t id_max_length;
  buffer stripped[STRIPPED_LIMIT]; /* request headers dropped first */
  size_t stripped_count;
  char* text; /* owns every buffer above */
} settings;

static bool set_characters(bool set[256], buffer value) {
  if (value.length == 0) {
    return false;
  }
  for (size_t i = 0; i < value.length; i++) {
    set[(unsigned char)value.ptr[i]] = true;
  }
  return true;
}

/* `value`: lower-case header names separated by commas, none empty, at most STRIPPED_LIMIT.
 * (Envoy keeps header names lower-case; an upper-case one here would never match.) */
static bool set_stripped(settings* config, buffer value) {
  size_t start = 0;
  for (size_t i = 0; i <= value.length; i++) {
    if (i < value.length && value.ptr[i] != ',') {
      char c = value.ptr[i];
      if (c <= ' ' || c >= 0x7f || (c >= 'A' && c <= 'Z')) {
        return false;
      }
      continue;
    }
    if (i == start || config->stripped_count == STRIPPED_LIMIT) {
      return false;
    }
    config->stripped[config->stripped_count++] = (buffer){value.ptr + start, i - start};
    start = i + 1;
  }
  return true;
}

/* Every key, each required once: the strings first, in the order of `strings` below. */
static const char* const KEYS[] = {
    "correlation_id_header", "request_id_header", "client_request_id_header",
    "context_namespace",     "guard_namespace",   "rest_namespace",
    "id_first_characters",   "id_characters",     "id_max_length",
    "stripped_headers",
};
#define KEY_COUNT (sizeof KEYS / sizeof KEYS[0])

/* One `key=value` line; false for an unknown key, a repeated one or a bad value. */
static bool apply(settings* config, buffer key, buffer value, unsigned* seen) {
  buffer* strings[] = {
      &config->correlation_id_header, &config->request_id_header,
      &config->client_request_id_header, &config->context_namespace,
      &config->guard_namespace, &config->rest_namespace,
  };
  for (unsigned i = 0; i < KEY_COUNT; i++) {
    if (!same(key, text_of(KEYS[i]))) {
      continue;
    }
    if (*seen & (1u << i) || value.length == 0) {
      return false;
    }
    *seen |= 1u << i;
    if (i < sizeof strings / sizeof strings[0]) {
      *strings[i] = value;
      return true;
    }
    if (same(key, LITERAL("id_first_characters"))) {
      return set_characters(config->id_first, value);
    }
    if (same(key, LITERAL("id_characters"))) {
      return set_characters(config->id_rest, value);
    }
    if (same(key, LITERAL("stripped_headers"))) {
      return set_stripped(config, value);
    }
    size_t max = 0;
    for (size_t j = 0; j < value.length; j++) {
      if (value.ptr[j] < '0' || value.ptr[j] > '9' || max > ID_LENGTH_LIMIT) {
        return false;
      }
      max = max * 10 + (size_t)(value.ptr[j] - '0');
    }
    config->id_max_length = max;
    return max >= 1 && max <= ID_LENGTH_LIMIT;
  }
  return false;
}

static void free_settings(settings* config) {
  free(config->text);
  free(config);
}

/* --- module and filter configuration ---------------------------------------------------- */

EXPORT const void* envoy_dynamic_module_on_http_filter_config_new(void* config_envoy,
                                                                  buffer name, buffer config) {
  (void)config_envoy;
  if (!same(name, LITERAL(FILTER_NAME)) || config.ptr == NULL) {
    return NULL; /* Envoy rejects the configuration */
  }
  settings* state = calloc(1, sizeof *state);
  if (state == NULL || (state->text = malloc(config.length + 1)) == NULL) {
    free(state);
    return NULL;
  }
  /* A copy Envoy does not own: the configuration outlives this call. */
  memcpy(state->text, config.ptr, config.length);
  state->text[config.length] = '\n';
  unsigned seen = 0;
  size_t start = 0;
  for (size_t i = 0; i <= config.length; i++) {
    if (state->text[i] != '\n') {
      continue;
    }
    buffer line = {state->text + start, i - start};
    start = i + 1;
    if (line.length == 0) {
      continue;
    }
    const char* separator = memchr(line.ptr, '=', line.length);
    if (separator == NULL) {
      free_settings(state);
      return NULL;
    }
    buffer key = {line.ptr, (size_t)(separator - line.ptr)};
    buffer value = {separator + 1, line.length - key.length - 1};
    if (!apply(state, key, value, &seen)) {
      free_settings(state);
      return NULL;
    }
  }
  if (seen != (1u << KEY_COUNT) - 1) {
    free_settings(state); /* a key is missing */
    return NULL;
  }
  return state;
}

EXPORT void envoy_dynamic_module_on_http_filter_config_destroy(const void* config) {
  free_settings((settings*)config);
}

/* --- the correlation id ----------------------------------------------------------------- */

/*
 * The request header `name` if it is a well-formed id, copied into `out` (room for
 * ID_LENGTH_LIMIT bytes): its value, or its values joined with ',' if it came more than once
 * (as the Lua filter read it); 0 if absent or malformed.
 */
static size_t well_formed_id(void* filter_envoy, const settings* config, buffer name,
                             char out[ID_LENGTH_LIMIT]) {
  buffer value = {NULL, 0};
  size_t count = 0;
  if (!envoy_dynamic_module_callback_http_get_header(filter_envoy, REQUEST_HEADERS, name, &value,
                                                     0, &count) ||
      count == 0) {
    return 0;
  }
  size_t length = 0;
  for (size_t index = 0; index < count; index++) {
    if (index > 0) {
      value = (buffer){NULL, 0};
      envoy_dynamic_module_callback_http_get_header(filter_envoy, REQUEST_HEADERS, name, &value,
                                                    index, NULL);
      if (length + 1 > config->id_max_length) {
        return 0;
      }
      out[length++] = ',';
    }
    if (value.length > config->id_max_length - length) {
      return 0;
    }
    if (value.length > 0) {
      memcpy(out + length, value.ptr, value.length);
    }
    length += value.length;
  }
  if (length == 0 || !config->id_first[(unsigned char)out[0]]) {
    return 0;
  }
  for (size_t i = 1; i < length; i++) {
    if (!config->id_rest[(unsigned char)out[i]]) {
      return 0;
    }
  }
  return length;
}

/* --- the request guard ------------------------------------------------------------------ */

/* Query parameter names (compared lower-cased, percent-decoded, trimmed) that carry one. */
static const char* const CREDENTIAL_PARAMETERS[] = {
    "access_token", "token", "id_token", "api_key", "apikey", "password", "client_secret",
};
#define REDACTED "REDACTED"
/* Longer than every credential parameter name: a longer name is none of them. */
#define NAME_ROOM 32

static const char CONNECT_REFUSED[] =
    "CONNECT is not supported: this is an API endpoint, not a proxy";
static const char CREDENTIAL_REFUSED_BEFORE[] =
    "credentials are not accepted in the URL (query parameter '";
static const char CREDENTIAL_REFUSED_AFTER[] = "'): send the token in the Authorization header";
/* Envoy could not give or take what a check needs (a request header, a header change): it
 * cannot in Envoy 1.40 while the request headers are being decoded, but if it does, the
 * request is refused rather than passed on unchecked (fail closed), with the shaper's 503 for
 * the same (its out_of_memory). */
static const char UNAVAILABLE[] = FAILED_CLOSED_DETAIL;
#define UNAVAILABLE_DETAILS "netweave_request_context_failed"

/*
 * The credential parameter `raw` names (`+` read as a space, then %XX decoded, then trimmed
 * and lower-cased), or NULL. Whitespace inside the name, or a name longer than NAME_ROOM,
 * is none of them: no credential name holds either.
 */
static const char* credential_name(const char* raw, size_t raw_length) {
  char name[NAME_ROOM];
  size_t length = 0;
  bool space_after = false;
  for (size_t i = 0; i < raw_length; i++) {
    unsigned char c = (unsigned char)raw[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%' && i + 2 < raw_length && hex_value((unsigned char)raw[i + 1]) >= 0 &&
               hex_value((unsigned char)raw[i + 2]) >= 0) {
      c = (unsigned char)(hex_value((unsigned char)raw[i + 1]) * 16 +
                          hex_value((unsigned char)raw[i + 2]));
      i += 2;
    }
    if (is_space(c)) {
      space_after = length > 0;
      continue;
    }
    if (space_after || length == NAME_ROOM) {
      return NULL;
    }
    name[length++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  for (size_t i = 0; i < sizeof CREDENTIAL_PARAMETERS / sizeof CREDENTIAL_PARAMETERS[0]; i++) {
    if (strlen(CREDENTIAL_PARAMETERS[i]) == length &&
        memcmp(CREDENTIAL_PARAMETERS[i], name, length) == 0) {
      return CREDENTIAL_PARAMETERS[i];
    }
  }
  return NULL;
}

/*
 * Calls `visit` for every non-empty `&`-separated part of the query, with the part's name
 * (up to its first `=`), whether it has an `=`, and the credential it names (or NULL).
 * Returns the first credential named, or NULL.
 */
typedef void (*part_visitor)(void* context, buffer part, size_t name_length, bool equals,
                             const char* credential);

static const char* scan_query(buffer query, part_visitor visit, void* context) {
  const char* found = NULL;
  size_t start = 0;
  for (size_t i = 0; i <= query.length; i++) {
    if (i < query.length && query.ptr[i] != '&') {
      continue;
    }
    buffer part = {query.ptr + start, i - start};
    start = i + 1;
    if (part.length == 0) {
      continue; /* "a&&b", a leading or a trailing &: no part */
    }
    const char* separator = memchr(part.ptr, '=', part.length);
    size_t name_length = separator == NULL ? part.length : (size_t)(separator - part.ptr);
    const char* credential = credential_name(part.ptr, name_length);
    if (found == NULL) {
      found = credential;
    }
    if (visit != NULL) {
      visit(context, part, name_length, separator != NULL, credential);
    }
  }
  return found;
}

typedef struct {
  char* out;
  size_t length;
} writer;

/* The redacted query: the parts joined by `&`, a credential's value replaced. */
static void write_part(void* context, buffer part, size_t name_length, bool equals,
                       const char* credential) {
  writer* into = context;
  if (into->length > 0) {
    into->out[into->length++] = '&';
  }
  if (credential != NULL && equals) {
    memcpy(into->out + into->length, part.ptr, name_length);
    into->length += name_length;
    memcpy(into->out + into->length, "=" REDACTED, sizeof "=" REDACTED - 1);
    into->length += sizeof "=" REDACTED - 1;
  } else {
    memcpy(into->out + into->length, part.ptr, part.length);
    into->length += part.length;
  }
}

/* Marks the request as REST (as the shaper does) and sends the refusal. */
static void refuse(void* filter_envoy, const settings* config, uint32_t status,
                   http_header* headers, size_t count, buffer body, const char* details) {
  envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
      filter_envoy, config->rest_namespace, LITERAL("rest"), LITERAL("1"));
  envoy_dynamic_module_callback_http_send_response(filter_envoy, status, headers, count, body,
                                                   (buffer){details, strlen(details)});
}

/* `reply` holds the headers every refusal carries (the correlation id), with room for one
 * more. Returns the status for Envoy: stop iteration once a refusal was sent. */
static int guard_request(void* filter_envoy, const settings* config, http_header* reply,
                         size_t count) {
  buffer value = {NULL, 0};
  if (!envoy_dynamic_module_callback_http_get_header(filter_envoy, REQUEST_HEADERS,
                                                     LITERAL(":method"), &value, 0, NULL)) {
    /* Every request has one (Envoy's codecs see to it): a CONNECT must not pass as none. */
    refuse(filter_envoy, config, 503, reply, count, LITERAL(UNAVAILABLE), UNAVAILABLE_DETAILS);
    return HEADERS_STOP_ITERATION;
  }
  if (same(value, LITERAL("CONNECT"))) {
    /* The target of a CONNECT is a host:port tunnel, which allows no method: an empty Allow. */
    reply[count++] = (http_header){"allow", 5, "", 0};
    refuse(filter_envoy, config, 405, reply, count, LITERAL(CONNECT_REFUSED),
           "netweave_connect_refused");
    return HEADERS_STOP_ITERATION;
  }
  value = (buffer){NULL, 0};
  if (envoy_dynamic_module_callback_http_get_header(filter_envoy, REQUEST_HEADERS,
                                                    LITERAL("content-type"), &value, 0, NULL) &&
      starts_with(value, LITERAL("application/grpc"))) {
    return HEADERS_CONTINUE;
  }
  buffer path = {NULL, 0};
  if (!envoy_dynamic_module_callback_http_get_header(filter_envoy, REQUEST_HEADERS,
                                                     LITERAL(":path"), &path, 0, NULL)) {
    /* Every request but a CONNECT (refused above) has one: a query must not pass unchecked. */
    refuse(filter_envoy, config, 503, reply, count, LITERAL(UNAVAILABLE), UNAVAILABLE_DETAILS);
    return HEADERS_STOP_ITERATION;
  }
  if (path.ptr == NULL) {
    return HEADERS_CONTINUE; /* (an empty value: no query) */
  }
  const char* mark = memchr(path.ptr, '?', path.length);
  if (mark == NULL) {
    return HEADERS_CONTINUE;
  }
  size_t base_length = (size_t)(mark - path.ptr);
  buffer query = {mark + 1, path.length - base_length - 1};
  const char* found = scan_query(query, NULL, NULL);
  if (found == NULL) {
    envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter_envoy, config->guard_namespace, LITERAL("query"), query);
    return HEADERS_CONTINUE;
  }
  /* A part grows by at most "REDACTED" ("token=" -> "token=REDACTED"); a part is at least a
   * byte, so the query holds at most query.length of them. */
  size_t room = path.length + query.length * (sizeof REDACTED - 1) + 1;
  char* redacted_path = malloc(room);
  bool path_redacted = false;
  if (redacted_path == NULL) {
    /* No memory to redact the query part by part: drop all of it from what the logs read,
     * and still refuse. */
    envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter_envoy, config->guard_namespace, LITERAL("query"), LITERAL(REDACTED));
  } else {
    memcpy(redacted_path, path.ptr, base_length + 1);
    writer into = {redacted_path + base_length + 1, 0};
    scan_query(query, write_part, &into);
    buffer redacted = {into.out, into.length};
    envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter_envoy, config->guard_namespace, LITERAL("query"), redacted);
    path_redacted = envoy_dynamic_module_callback_http_set_header(
        filter_envoy, REQUEST_HEADERS, LITERAL(":path"),
        (buffer){redacted_path, base_length + 1 + redacted.length});
    free(redacted_path);
  }
  if (!path_redacted) {
    /* Best effort, for the edge audit log (which records :path): the request is refused
     * below whatever happens here, and nothing more can be done if Envoy takes no change. */
    (void)envoy_dynamic_module_callback_http_set_header(filter_envoy, REQUEST_HEADERS,
                                                        LITERAL(":path"), LITERAL("/?" REDACTED));
  }
  size_t name_length = strlen(found);
  char body[sizeof CREDENTIAL_REFUSED_BEFORE + NAME_ROOM + sizeof CREDENTIAL_REFUSED_AFTER];
  size_t length = 0;
  memcpy(body, CREDENTIAL_REFUSED_BEFORE, sizeof CREDENTIAL_REFUSED_BEFORE - 1);
  length += sizeof CREDENTIAL_REFUSED_BEFORE - 1;
  memcpy(body + length, found, name_length);
  length += name_length;
  memcpy(body + length, CREDENTIAL_REFUSED_AFTER, sizeof CREDENTIAL_REFUSED_AFTER - 1);
  length += sizeof CREDENTIAL_REFUSED_AFTER - 1;
  refuse(filter_envoy, config, 400, reply, count, (buffer){body, length},
         "netweave_credential_in_query");
  return HEADERS_STOP_ITERATION;
}

/* --- per request ------------------------------------------------------------------------ */

/* The filter keeps no state of its own per request: the configuration stands for it. */
EXPORT const void* envoy_dynamic_module_on_http_filter_new(const void* config,
                                                           void* filter_envoy) {
  (void)filter_envoy;
  return config;
}

EXPORT int envoy_dynamic_module_on_http_filter_request_headers(void* filter_envoy,
                                                               const void* filter,
                                                               bool end_of_stream) {
  (void)end_of_stream;
  const settings* config = filter;
  /* Each header change below keeps what a client must not send from the core (an identity
   * header, a malformed id or its copy of the request id): if Envoy takes one not, the
   * request is refused (UNAVAILABLE). */
  bool headers_set = true;
  for (size_t i = 0; i < config->stripped_count; i++) {
    headers_set = envoy_dynamic_module_callback_http_set_header(filter_envoy, REQUEST_HEADERS,
                                                                config->stripped[i],
                                                                (buffer){NULL, 0}) &&
                  headers_set;
  }
  /* A copy: Envoy's buffers may move once a header is set. */
  char id[ID_LENGTH_LIMIT];
  size_t id_length = well_formed_id(filter_envoy, config, config->correlation_id_header, id);
  if (id_length == 0) {
    id_length = well_formed_id(filter_envoy, config, config->client_request_id_header, id);
  }
  if (id_length == 0) {
    id_length = well_formed_id(filter_envoy, config, config->request_id_header, id);
  }
  headers_set = envoy_dynamic_module_callback_http_set_header(
                    filter_envoy, REQUEST_HEADERS, config->client_request_id_header,
                    (buffer){NULL, 0}) &&
                headers_set;
  http_header reply[2];
  size_t count = 0;
  http_header context[2];
  size_t recorded = 0;
  if (id_length > 0) {
    buffer value = {id, id_length};
    headers_set = envoy_dynamic_module_callback_http_set_header(
                      filter_envoy, REQUEST_HEADERS, config->correlation_id_header, value) &&
                  headers_set;
    headers_set = envoy_dynamic_module_callback_http_set_header(
                      filter_envoy, REQUEST_HEADERS, config->request_id_header, value) &&
                  headers_set;
    context[recorded++] = (http_header){"correlation_id", 14, id, id_length};
    reply[count++] = (http_header){config->correlation_id_header.ptr,
                              config->correlation_id_header.length, id, id_length};
  } else {
    /* Only if Envoy generated no request id (it always does at this edge). */
    headers_set = envoy_dynamic_module_callback_http_set_header(
                      filter_envoy, REQUEST_HEADERS, config->correlation_id_header,
                      (buffer){NULL, 0}) &&
                  headers_set;
  }
  buffer route = {NULL, 0};
  if (envoy_dynamic_module_callback_http_get_metadata_string(
          filter_envoy, METADATA_ROUTE, config->context_namespace, LITERAL("route"), &route) &&
      route.ptr != NULL) {
    context[recorded++] = (http_header){"route", 5, route.ptr, route.length};
  }
  if (recorded > 0) {
    envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
        filter_envoy, config->context_namespace, context, recorded);
  }
  if (!headers_set) {
    refuse(filter_envoy, config, 503, reply, count, LITERAL(UNAVAILABLE), UNAVAILABLE_DETAILS);
    return HEADERS_STOP_ITERATION;
  }
  return guard_request(filter_envoy, config, reply, count);
}

/* Nothing to do on the rest of the stream. */
EXPORT int envoy_dynamic_module_on_http_filter_request_body(void* filter_envoy,
                                                            const void* filter,
                                                            bool end_of_stream) {
  (void)filter_envoy, (void)filter, (void)end_of_stream;
  return BODY_CONTINUE;
}

EXPORT int envoy_dynamic_module_on_http_filter_request_trailers(void* filter_envoy,
                                                                const void* filter) {
  (void)filter_envoy, (void)filter;
  return TRAILERS_CONTINUE;
}

/* The seconds a 429 tells the client to wait: the rate limiter's x-ratelimit-reset if it is
 * 1 to 9 digits worth at least 1, else "1"; copied into `out` (Envoy's buffer may move once a
 * header is added). */
static buffer retry_after(void* filter_envoy, char out[9]) {
  buffer reset = {NULL, 0};
  if (!envoy_dynamic_module_callback_http_get_header(filter_envoy, RESPONSE_HEADERS,
                                                     LITERAL("x-ratelimit-reset"), &reset, 0,
                                                     NULL) ||
      reset.ptr == NULL || reset.length == 0 || reset.length > 9) {
    return LITERAL("1");
  }
  bool positive = false;
  for (size_t i = 0; i < reset.length; i++) {
    if (reset.ptr[i] < '0' || reset.ptr[i] > '9') {
      return LITERAL("1");
    }
    positive = positive || reset.ptr[i] != '0';
  }
  if (!positive) {
    return LITERAL("1");
  }
  memcpy(out, reset.ptr, reset.length);
  return (buffer){out, reset.length};
}

/* Every reply of a later filter or of the core: the correlation id, and a 429's Retry-After.
 * Nothing here can refuse a reply already on its way; a header Envoy does not take is left as
 * it was (as a header_mutation filter would). */
EXPORT int envoy_dynamic_module_on_http_filter_response_headers(void* filter_envoy,
                                                                const void* filter,
                                                                bool end_of_stream) {
  (void)end_of_stream;
  const settings* config = filter;
  buffer id = {NULL, 0};
  if (envoy_dynamic_module_callback_http_get_metadata_string(
          filter_envoy, METADATA_DYNAMIC, config->context_namespace, LITERAL("correlation_id"),
          &id) &&
      id.ptr != NULL && id.length > 0) {
    (void)envoy_dynamic_module_callback_http_set_header(filter_envoy, RESPONSE_HEADERS,
                                                        config->correlation_id_header, id);
  }
  buffer status = {NULL, 0};
  buffer existing = {NULL, 0};
  size_t count = 0;
  if (envoy_dynamic_module_callback_http_get_header(filter_envoy, RESPONSE_HEADERS,
                                                    LITERAL(":status"), &status, 0, NULL) &&
      same(status, LITERAL("429")) &&
      (!envoy_dynamic_module_callback_http_get_header(filter_envoy, RESPONSE_HEADERS,
                                                      LITERAL("retry-after"), &existing, 0,
                                                      &count) ||
       count == 0)) {
    char seconds[9];
    (void)envoy_dynamic_module_callback_http_add_header(filter_envoy, RESPONSE_HEADERS,
                                                        LITERAL("retry-after"),
                                                        retry_after(filter_envoy, seconds));
  }
  return HEADERS_CONTINUE;
}

EXPORT int envoy_dynamic_module_on_http_filter_response_body(void* filter_envoy,
                                                             const void* filter,
                                                             bool end_of_stream) {
  (void)filter_envoy, (void)filter, (void)end_of_stream;
  return BODY_CONTINUE;
}

EXPORT int envoy_dynamic_module_on_http_filter_response_trailers(void* filter_envoy,
                                                                 const void* filter) {
  (void)filter_envoy, (void)filter;
  return TRAILERS_CONTINUE;
}

EXPORT void envoy_dynamic_module_on_http_filter_destroy(const void* filter) {
  (void)filter; /* the configuration, freed with it */
}
