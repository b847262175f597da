/*
 * The slice of Envoy's dynamic-module ABI (source/extensions/dynamic_modules/abi/abi.h, as of
 * Envoy 1.40; its version is in abi_version.h) that netweave's HTTP filters use:
 * request_context.c and shaper.c each include it once. Only what they call is declared, with the Envoy 1.40 signatures; Envoy
 * resolves the callbacks by name when it loads a module. One home for them, so an Envoy
 * upgrade that changes the ABI is one file to check (tests/rest_facade run both filters in the
 * real Envoy). rest_facade/envoy_modules.py rebuilds a module when this file changes too.
 *
 * It also defines the event hooks Envoy 1.40 requires of every HTTP filter module and that
 * neither filter needs (HTTP callouts, streams a filter starts itself, scheduled events,
 * watermarks): Envoy refuses the filter configuration when one is missing (checked one by one
 * against `envoy --mode validate`). So include it in exactly one source file per module.
 */
#ifndef NETWEAVE_HTTP_FILTER_H
#define NETWEAVE_HTTP_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* EXPORT, ABI_VERSION and envoy_dynamic_module_on_program_init (shared with source_limit.c). */
#include "abi_version.h"

/* A buffer either side owns (envoy_buffer and module_buffer in abi.h share the layout). */
typedef struct {
  const char* ptr;
  size_t length;
} buffer;

/* A header, or a key-value pair of dynamic metadata (the same layout in abi.h). */
typedef struct {
  const char* key_ptr;
  size_t key_length;
  const char* value_ptr;
  size_t value_length;
} http_header;

enum { REQUEST_HEADERS = 0, RESPONSE_HEADERS = 2, RESPONSE_TRAILERS = 3 }; /* header_type */
enum { RECEIVED_REQUEST_BODY = 0, BUFFERED_REQUEST_BODY = 1 };  /* http_body_type */
enum { RECEIVED_RESPONSE_BODY = 2, BUFFERED_RESPONSE_BODY = 3 };
enum { METADATA_DYNAMIC = 0, METADATA_ROUTE = 1 };              /* metadata_source */
/* The on_http_filter_* statuses (Envoy's FilterHeadersStatus, FilterDataStatus...). */
enum { HEADERS_CONTINUE = 0, HEADERS_STOP_ITERATION = 1 };
enum { BODY_CONTINUE = 0, BODY_STOP_AND_BUFFER = 1, BODY_STOP_NO_BUFFER = 3 };
enum { TRAILERS_CONTINUE = 0, TRAILERS_STOP_ITERATION = 1 };

/* The 503's detail of both filters when they fail closed: memory ran out, or Envoy did not
 * give or take what a check needs (shaper.c out_of_memory, request_context.c refusals). */
#define FAILED_CLOSED_DETAIL "the gateway is out of memory: try again later"

/* --- small byte-string helpers both filters use ---------------------------------------- */

#define LITERAL(text) ((buffer){(text), sizeof(text) - 1})

static inline buffer text_of(const char* text) { return (buffer){text, strlen(text)}; }

static inline bool same(buffer a, buffer b) {
  return a.length == b.length && (a.length == 0 || memcmp(a.ptr, b.ptr, a.length) == 0);
}

static inline bool starts_with(buffer text, buffer prefix) {
  return text.length >= prefix.length && memcmp(text.ptr, prefix.ptr, prefix.length) == 0;
}

/* Lua's %s in the C locale (the filters replaced Lua): space, \t, \n, \v, \f, \r. */
static inline bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* The value of a hexadecimal digit, or -1. */
static inline int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* --- callbacks (Envoy implements them) -------------------------------------------------- */

/* `count_out` (optional): how many values the header has; `index` picks one. */
extern bool envoy_dynamic_module_callback_http_get_header(void* filter_envoy, int header_type,
                                                          buffer key, buffer* value_out,
                                                          size_t index, size_t* count_out);
extern size_t envoy_dynamic_module_callback_http_get_headers_size(void* filter_envoy,
                                                                  int header_type);
extern bool envoy_dynamic_module_callback_http_get_headers(void* filter_envoy, int header_type,
                                                           http_header* headers_out);
/* Replaces every value of the header; a value with a NULL ptr removes it. */
extern bool envoy_dynamic_module_callback_http_set_header(void* filter_envoy, int header_type,
                                                          buffer key, buffer value);
extern bool envoy_dynamic_module_callback_http_add_header(void* filter_envoy, int header_type,
                                                          buffer key, buffer value);
/* Envoy's sendLocalReply, so local_reply_config applies; `headers` are added to the reply. */
extern void envoy_dynamic_module_callback_http_send_response(void* filter_envoy,
                                                             uint32_t status_code,
                                                             http_header* headers,
                                                             size_t headers_count, buffer body,
                                                             buffer details);
extern bool envoy_dynamic_module_callback_http_get_body_chunks(void* filter_envoy, int body_type,
                                                               buffer* chunks_out);
extern size_t envoy_dynamic_module_callback_http_get_body_chunks_size(void* filter_envoy,
                                                                      int body_type);
extern size_t envoy_dynamic_module_callback_http_get_body_size(void* filter_envoy, int body_type);
extern bool envoy_dynamic_module_callback_http_append_body(void* filter_envoy, int body_type,
                                                           buffer data);
extern bool envoy_dynamic_module_callback_http_drain_body(void* filter_envoy, int body_type,
                                                          size_t length);
extern bool envoy_dynamic_module_callback_http_received_buffered_request_body(void* filter_envoy);
extern bool envoy_dynamic_module_callback_http_received_buffered_response_body(
    void* filter_envoy);
extern void envoy_dynamic_module_callback_http_set_dynamic_metadata_string(void* filter_envoy,
                                                                           buffer ns, buffer key,
                                                                           buffer value);
/* Several keys of one namespace in one call (one namespace lookup). */
extern void envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
    void* filter_envoy, buffer ns, const http_header* entries, size_t count);
extern bool envoy_dynamic_module_callback_http_get_metadata_string(void* filter_envoy,
                                                                   int source, buffer ns,
                                                                   buffer key, buffer* value_out);
extern bool envoy_dynamic_module_callback_http_get_metadata_bool(void* filter_envoy, int source,
                                                                 buffer ns, buffer key,
                                                                 bool* value_out);
extern bool envoy_dynamic_module_callback_http_get_metadata_list_size(void* filter_envoy,
                                                                      int source, buffer ns,
                                                                      buffer key,
                                                                      size_t* size_out);
extern bool envoy_dynamic_module_callback_http_get_metadata_list_string(void* filter_envoy,
                                                                        int source, buffer ns,
                                                                        buffer key, size_t index,
                                                                        buffer* value_out);

/* --- event hooks Envoy requires and these filters do not use ----------------------------- */

EXPORT void envoy_dynamic_module_on_http_filter_stream_complete(void* filter_envoy,
                                                                const void* filter) {
  (void)filter_envoy, (void)filter;
}

EXPORT void envoy_dynamic_module_on_http_filter_http_callout_done(
    void* filter_envoy, const void* filter, uint64_t callout_id, int result, void* headers,
    size_t headers_size, void* body_chunks, size_t body_chunks_size) {
  (void)filter_envoy, (void)filter, (void)callout_id, (void)result, (void)headers;
  (void)headers_size, (void)body_chunks, (void)body_chunks_size;
}

EXPORT void envoy_dynamic_module_on_http_filter_http_stream_headers(void* filter_envoy,
                                                                    const void* filter,
                                                                    uint64_t stream_id,
                                                                    void* headers,
                                                                    size_t headers_size,
                                                                    bool end_stream) {
  (void)filter_envoy, (void)filter, (void)stream_id, (void)headers, (void)headers_size;
  (void)end_stream;
}

EXPORT void envoy_dynamic_module_on_http_filter_http_stream_data(void* filter_envoy,
                                                                 const void* filter,
                                                                 uint64_t stream_id,
                                                                 const void* data,
                                                                 size_t data_count,
                                                                 bool end_stream) {
  (void)filter_envoy, (void)filter, (void)stream_id, (void)data, (void)data_count;
  (void)end_stream;
}

EXPORT void envoy_dynamic_module_on_http_filter_http_stream_trailers(void* filter_envoy,
                                                                     const void* filter,
                                                                     uint64_t stream_id,
                                                                     void* trailers,
                                                                     size_t trailers_size) {
  (void)filter_envoy, (void)filter, (void)stream_id, (void)trailers, (void)trailers_size;
}

EXPORT void envoy_dynamic_module_on_http_filter_http_stream_complete(void* filter_envoy,
                                                                     const void* filter,
                                                                     uint64_t stream_id) {
  (void)filter_envoy, (void)filter, (void)stream_id;
}

EXPORT void envoy_dynamic_module_on_http_filter_http_stream_reset(void* filter_envoy,
                                                                  const void* filter,
                                                                  uint64_t stream_id,
                                                                  int reason) {
  (void)filter_envoy, (void)filter, (void)stream_id, (void)reason;
}

EXPORT void envoy_dynamic_module_on_http_filter_scheduled(void* filter_envoy,
                                                          const void* filter,
                                                          uint64_t event_id) {
  (void)filter_envoy, (void)filter, (void)event_id;
}

EXPORT void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    void* filter_envoy, const void* filter) {
  (void)filter_envoy, (void)filter;
}

EXPORT void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    void* filter_envoy, const void* filter) {
  (void)filter_envoy, (void)filter;
}

#endif /* NETWEAVE_HTTP_FILTER_H */
