/*
 * What every netweave Envoy module (dynamic module) tells Envoy about itself when it is
 * loaded: the ABI version it was written against, and the EXPORT marking of the hooks Envoy
 * looks up by name (the modules are built with -fvisibility=hidden). One home for them, so an
 * Envoy upgrade changes the version in one place. http_filter.h includes it for the HTTP
 * filters (request_context.c, shaper.c), source_limit.c (a network filter) directly.
 *
 * It defines envoy_dynamic_module_on_program_init, so include it in exactly one source file
 * per module. rest_facade/envoy_modules.py rebuilds a module when this file changes too.
 */
#ifndef NETWEAVE_ABI_VERSION_H
#define NETWEAVE_ABI_VERSION_H

#define EXPORT __attribute__((visibility("default")))

/* What envoy_dynamic_module_on_program_init returns: Envoy 1.40's
 * ENVOY_DYNAMIC_MODULES_ABI_VERSION. Envoy loads a module that reports another one too, with a
 * warning, and then resolves its symbols by name (tests/rest_facade run every module in the
 * real Envoy). */
#define ABI_VERSION "v0.2.0"

EXPORT const char* envoy_dynamic_module_on_program_init(void) { return ABI_VERSION; }

#endif /* NETWEAVE_ABI_VERSION_H */
