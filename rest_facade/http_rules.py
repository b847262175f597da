"""The REST surface as the .proto files declare it: every `google.api.http` rule of every
service in a descriptor set (FileDescriptorSet, as `make gen` writes gen/o2ims.pb).

This is the one reader of the HTTP annotations. Envoy's routes (405 with Allow, 404 for
the rest) and the OpenAPI document are both built from what it returns, so the REST
contract cannot drift from what the transcoder actually serves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

EMPTY = "google.protobuf.Empty"
PAGE_TOKEN_FIELD = "next_page_token"
# The HTTP verbs of HttpRule's `pattern` oneof; `custom` carries its own.
_PATTERN_VERBS = ("get", "put", "post", "delete", "patch")
# A single path segment: what `*` and `{var}` match. With merge_slashes a segment
# is never empty, and an escaped slash (%2F) stays inside its segment.
_SEGMENT_REGEX = "[^/]+"


class TemplateError(ValueError):
    """A path template that does not follow the google.api.http grammar."""


@dataclass(frozen=True)
class Segment:
    """One path segment: a literal, `*` (one segment) or `**` (zero or more segments)."""

    text: str
    # The request field bound to this segment, if it lies inside a `{field=...}` variable.
    variable: str | None = None

    @property
    def is_literal(self) -> bool:
        return self.text not in ("*", "**")

    def regex(self) -> str:
        if self.text == "**":
            # Zero or more segments, each with its leading slash.
            return f"(?:/{_SEGMENT_REGEX})*"
        if self.text == "*":
            return "/" + _SEGMENT_REGEX
        return "/" + re.escape(self.text)


@dataclass(frozen=True)
class PathTemplate:
    """A parsed google.api.http path template, e.g. `/v1/pools/{pool_id}/resources`.

    Grammar (google/api/http.proto): Template = "/" Segments [":" Verb];
    Segment = "*" | "**" | LITERAL | "{" FieldPath ["=" Segments] "}".
    """

    source: str
    segments: tuple[Segment, ...]
    verb: str = ""

    @classmethod
    def parse(cls, source: str) -> PathTemplate:
        if not source.startswith("/"):
            raise TemplateError(f"{source!r}: a path template starts with '/'")
        # A custom verb (`/v1/things/{id}:cancel`) follows the last segment.
        last = source.rsplit("/", 1)[-1]
        head, colon, verb = last.partition(":")
        if colon and "}" not in verb:
            body = source[: len(source) - len(last)] + head
        else:
            body, verb = source, ""
        segments: list[Segment] = []
        for token in _split_outside_braces(body[1:], source):
            if token.startswith("{"):
                if not token.endswith("}"):
                    raise TemplateError(f"{source!r}: unterminated variable {token!r}")
                field_path, _, pattern = token[1:-1].partition("=")
                if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", field_path):
                    raise TemplateError(f"{source!r}: bad field path {field_path!r}")
                for part in (pattern or "*").split("/"):
                    segments.append(_segment(part, source, variable=field_path))
            else:
                segments.append(_segment(token, source, variable=None))
        if any(segment.text == "**" for segment in segments[:-1]):
            raise TemplateError(f"{source!r}: '**' may only be the last segment")
        return cls(source, tuple(segments), verb)

    @cached_property
    def variables(self) -> tuple[str, ...]:
        """The request field paths bound by the template, in order of appearance."""
        seen: list[str] = []
        for segment in self.segments:
            if segment.variable is not None and segment.variable not in seen:
                seen.append(segment.variable)
        return tuple(seen)

    @cached_property
    def regex(self) -> str:
        """An anchored RE2/Python regex for request paths (no query string) this template
        matches. A trailing slash is accepted, as the transcoder accepts it."""
        path = "".join(segment.regex() for segment in self.segments)
        if self.verb:
            return f"^{path}:{re.escape(self.verb)}$"
        # For the root template (no segments) this is ^/?$.
        return f"^{path}/?$"

    def matches(self, path: str) -> bool:
        return re.match(self.regex, path) is not None

    @cached_property
    def parameters(self) -> tuple[str, ...]:
        """The variables a client chooses: those with a wildcard. A variable bound to
        literals only (`{api_version=v1}`) is a fixed part of the path."""
        return tuple(
            variable
            for variable in self.variables
            if any(not s.is_literal for s in self.segments if s.variable == variable)
        )

    def resource_path(self, names: Mapping[str, str] | None = None) -> str:
        """The path with each parameter as `{name}`: the OpenAPI path pattern.

        `names` maps field paths to parameter names (default: the field path). A variable
        spanning several segments becomes one parameter, as OpenAPI has no other way.
        """
        names = names or {}
        parts: list[str] = []
        current: str | None = None
        for segment in self.segments:
            if segment.variable is None or segment.variable not in self.parameters:
                current = None
                parts.append(segment.text)
            elif segment.variable != current:
                current = segment.variable
                parts.append("{" + names.get(segment.variable, segment.variable) + "}")
        path = "/" + "/".join(parts)
        return f"{path}:{self.verb}" if self.verb else path

    @cached_property
    def specificity(self) -> tuple[int, ...]:
        """Sort key: templates with literals earlier come first, so that an Envoy route
        list ordered by it tries `/a/literal` before `/a/*` and `/a/*` before `/a/**`."""
        rank = {"*": 1, "**": 2}
        return (*(rank.get(segment.text, 0) for segment in self.segments), 3)

    def covers(self, other: PathTemplate) -> bool:
        """Whether every path `other` matches is matched by this template too."""
        if self.verb != other.verb:
            return False
        mine, theirs = self.segments, other.segments
        if mine and mine[-1].text == "**":
            head = mine[:-1]
            return len(theirs) >= len(head) and _segments_cover(head, theirs[: len(head)])
        if any(segment.text == "**" for segment in theirs) or len(mine) != len(theirs):
            return False
        return _segments_cover(mine, theirs)


@dataclass(frozen=True)
class HttpRule:
    """One HTTP binding of one gRPC method (a method may have several: additional_bindings)."""

    service: str  # full name, e.g. o2ims.inventory.v1.InventoryService
    method: str  # e.g. ListResourcePools
    http_method: str  # GET, POST, PUT, PATCH, DELETE, or a custom verb
    template: PathTemplate
    body: str  # "" (no body), "*" (the whole request) or a request field name
    response_body: str
    input_type: str  # full message names
    output_type: str
    # For list responses (see `list_collection`): the JSON name of the collection field,
    # whose array is what REST clients get.
    collection: str | None = None
    # 0: the method's own rule; n: its n-th additional binding.
    binding: int = 0
    # Request fields a query string can set (proto names): scalars, enums and repeated
    # scalars that neither the path nor the body binds.
    query_fields: tuple[str, ...] = ()
    # The same, by proto and JSON name (the transcoder accepts both).
    query_names: tuple[str, ...] = ()
    # The booleans among them, by proto and JSON name: O2ims sends these as bare flags
    # (`?all_fields`), which the transcoder would ignore; the shaper adds `=true`.
    flags: tuple[str, ...] = ()

    @property
    def empty_response(self) -> bool:
        """REST answers with no body at all (O2ims DELETE: 200, empty body)."""
        return self.output_type == EMPTY

    @property
    def grpc_path(self) -> str:
        """The HTTP/2 path of the gRPC call the transcoder turns this request into."""
        return f"/{self.service}/{self.method}"


@dataclass(frozen=True)
class ResourcePath:
    """A distinct REST path and every HTTP method defined on it (for 405 Allow)."""

    template: PathTemplate
    methods: tuple[str, ...]
    # Boolean query flags of any method on this path (HttpRule.flags).
    flags: tuple[str, ...] = ()
    # Every query parameter name any method on this path accepts (proto and JSON names).
    query: tuple[str, ...] = ()


def load_pool(descriptor_set: Path) -> descriptor_pool.DescriptorPool:
    """A descriptor pool holding every file of a FileDescriptorSet built with
    --include_imports (protoc writes the files in dependency order)."""
    return pool_of(read_file_set(descriptor_set))


def read_file_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    """The FileDescriptorSet in `path` (as `make gen` writes gen/o2ims.pb)."""
    file_set = descriptor_pb2.FileDescriptorSet()
    file_set.ParseFromString(path.read_bytes())
    return file_set


def pool_of(file_set: descriptor_pb2.FileDescriptorSet) -> descriptor_pool.DescriptorPool:
    """A descriptor pool of every file in `file_set` (see load_pool)."""
    pool = descriptor_pool.DescriptorPool()
    for file_proto in file_set.file:
        pool.Add(file_proto)
    return pool


def services_with_rules(rules: Iterable[HttpRule]) -> list[str]:
    """Full names of the services that have HTTP rules, in declaration order."""
    return list(dict.fromkeys(rule.service for rule in rules))


def read_rules(descriptor_set: Path) -> list[HttpRule]:
    """Every HTTP rule of every service in the descriptor set, in declaration order."""
    file_set = read_file_set(descriptor_set)
    pool = pool_of(file_set)
    rules: list[HttpRule] = []
    for file_proto in file_set.file:
        package = f"{file_proto.package}." if file_proto.package else ""
        for service_proto in file_proto.service:
            rules.extend(rules_of_service(pool.FindServiceByName(package + service_proto.name)))
    return rules


def rules_of_service(service: descriptor.ServiceDescriptor) -> list[HttpRule]:
    """The HTTP rules of one service's methods, additional bindings included."""
    rules: list[HttpRule] = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        top = options.Extensions[annotations_pb2.http]
        # Nested bindings cannot nest further (http.proto), so one level is all there is.
        for index, binding in enumerate((top, *top.additional_bindings)):
            rules.append(_rule(service, method, binding, index))
    return rules


def list_collection(message: descriptor.Descriptor) -> descriptor.FieldDescriptor | None:
    """The collection field if `message` is a list response, else None.

    A list response has exactly two fields: `next_page_token` and one repeated (non-map)
    field. REST returns that field's array bare (O2ims G1); the REST shaper drops the rest,
    which is why nothing else may be there.
    """
    fields = list(message.fields)
    if len(fields) != 2 or PAGE_TOKEN_FIELD not in message.fields_by_name:
        return None
    (collection,) = (field for field in fields if field.name != PAGE_TOKEN_FIELD)
    if not collection.is_repeated or _is_map(collection):
        return None
    return collection


def resource_paths(rules: Iterable[HttpRule]) -> list[ResourcePath]:
    """Every distinct REST path (most specific first) with the methods allowed on it.

    Templates that differ only in variable names are one path. A path also allows the
    methods of every broader template that covers it (`/a/{id}` covers `/a/special`),
    because a request to it would be transcoded by that broader rule.
    """
    by_regex: dict[str, list[HttpRule]] = {}
    for rule in rules:
        by_regex.setdefault(rule.template.regex, []).append(rule)
    ordered = sorted(
        by_regex.values(),
        key=lambda on_path: (on_path[0].template.specificity, on_path[0].template.source),
    )
    paths: list[ResourcePath] = []
    for on_path in ordered:
        template = on_path[0].template
        allowed = {rule.http_method for rule in on_path}
        for other in ordered:
            if other is not on_path and other[0].template.covers(template):
                allowed.update(rule.http_method for rule in other)
        flags = dict.fromkeys(flag for rule in on_path for flag in rule.flags)
        query = dict.fromkeys(name for rule in on_path for name in rule.query_names)
        paths.append(ResourcePath(template, tuple(sorted(allowed)), tuple(flags), tuple(query)))
    return paths


# --- implementation ------------------------------------------------------------------------


def _rule(
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
    binding: http_pb2.HttpRule,
    index: int,
) -> HttpRule:
    pattern = binding.WhichOneof("pattern")
    if pattern is None:
        raise TemplateError(f"{service.full_name}/{method.name}: HTTP rule without a path")
    if pattern == "custom":
        http_method, path = binding.custom.kind.upper(), binding.custom.path
    else:
        assert pattern in _PATTERN_VERBS
        http_method, path = pattern.upper(), getattr(binding, pattern)
    collection = list_collection(method.output_type)
    try:
        template = PathTemplate.parse(path)
    except TemplateError as error:
        raise TemplateError(f"{service.full_name}/{method.name}: {error}") from error
    bound = {variable.split(".")[0] for variable in template.variables} | {binding.body}
    query = [
        field
        for field in method.input_type.fields
        if binding.body != "*" and field.name not in bound and field.message_type is None
    ]
    flags = [
        name
        for field in query
        if field.type == field.TYPE_BOOL and not field.is_repeated
        for name in dict.fromkeys((field.name, field.json_name))
    ]
    return HttpRule(
        service=service.full_name,
        method=method.name,
        http_method=http_method,
        template=template,
        body=binding.body,
        response_body=binding.response_body,
        input_type=method.input_type.full_name,
        output_type=method.output_type.full_name,
        collection=collection.json_name if collection is not None else None,
        binding=index,
        query_fields=tuple(field.name for field in query),
        query_names=tuple(
            dict.fromkeys(name for field in query for name in (field.name, field.json_name))
        ),
        flags=tuple(flags),
    )


def _is_map(field: descriptor.FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _segment(text: str, source: str, variable: str | None) -> Segment:
    if not text:
        raise TemplateError(f"{source!r}: empty path segment")
    if text not in ("*", "**") and not re.fullmatch(r"[^/{}=*]+", text):
        raise TemplateError(f"{source!r}: bad literal segment {text!r}")
    return Segment(text, variable)


def _split_outside_braces(text: str, source: str) -> list[str]:
    """Split on '/' except inside `{...}` (a variable may bind several segments)."""
    tokens: list[str] = []
    depth, current = 0, ""
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError(f"{source!r}: unbalanced '}}'")
        if char == "/" and depth == 0:
            tokens.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise TemplateError(f"{source!r}: unbalanced '{{'")
    if current or tokens:
        tokens.append(current)
    return tokens


def _segments_cover(mine: Iterable[Segment], theirs: Iterable[Segment]) -> bool:
    return all(
        not a.is_literal or (b.is_literal and a.text == b.text)
        for a, b in zip(mine, theirs, strict=True)
    )
