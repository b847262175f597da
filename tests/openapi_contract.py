"""Check REST responses against the gateway's OpenAPI document (rest_facade/openapi.py).

A `ContractRecorder` is an httpx response event hook: every response a test client gets is
matched to its operation (path template and method) and checked: the status must be
documented for it, the content type must be one it documents, the body must validate
against its schema, formats (uuid, ...) included (or be empty where none is documented),
and required headers (Location on 201, Allow on 405) must be present. Failures are
collected, and `assert_all_valid()` reports them at the end of a module or session, so one test's
undocumented response fails the run even if that test only looked at the status.

    contract = ContractRecorder(document)
    httpx.Client(..., event_hooks={"response": [contract.record]})
    ...
    contract.assert_all_valid()
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT_URI = "urn:netweave:openapi"


@dataclass(frozen=True)
class _PathItem:
    key: str
    regex: re.Pattern[str]
    specificity: tuple[int, ...]


class ContractViolation(AssertionError):
    """Responses that the OpenAPI document does not describe."""


class ContractValidator:
    """Validates one response at a time against an OpenAPI 3.1 document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource: Resource[Any] = Resource.from_contents(
            document, default_specification=DRAFT202012
        )
        self._registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}
        self._paths = sorted(
            (_path_item(key) for key in document["paths"]),
            key=lambda item: (item.specificity, item.key),
        )

    def operation(self, method: str, path: str) -> tuple[str | None, dict[str, Any] | None]:
        """(path key, operation) for a request; (key, None) if only the path is known."""
        normalized = normalize_path(path)
        for item in self._paths:
            if item.regex.match(normalized):
                operation = self.document["paths"][item.key].get(method.lower())
                return item.key, operation
        return None, None

    def check(
        self,
        method: str,
        path: str,
        status: int,
        headers: httpx.Headers | dict[str, str],
        body: bytes,
    ) -> list[str]:
        """Everything wrong with one response (an empty list if it is as documented)."""
        headers = httpx.Headers(headers)
        key, operation = self.operation(method, path)
        if operation is not None:
            where = f"{method.upper()} {key}"
            pointer = "#/" + "/".join(
                _escape(part) for part in ("paths", key or "", method.lower())
            )
            pointer += f"/responses/{status}"
        else:
            # No operation: the edge answered by itself (404 unknown path, 405 undefined
            # method, 400/431 before routing...). Those are the component responses.
            where = f"{method.upper()} {path} (no operation)"
            if status < 400:
                return [f"{where}: success {status} for a request no operation describes"]
            pointer = f"#/components/responses/{status}"
        documented = self._lookup(pointer, missing_ok=True)
        if documented is None:
            return [f"{where}: status {status} is not documented"]
        # Follow $refs to the response object: its schema is found under it.
        while "$ref" in documented:
            pointer = documented["$ref"]
            documented = self._lookup(pointer)
        response = documented
        errors = [
            f"{where} -> {status}: required header {name} is missing"
            for name, spec in response.get("headers", {}).items()
            if spec.get("required") and name.lower() not in headers
        ]
        if method.upper() == "HEAD":
            return errors
        content: dict[str, Any] = response.get("content", {})
        if not content:
            if body:
                errors.append(f"{where} -> {status}: documented without a body, got {body!r:.200}")
            return errors
        media_type = headers.get("content-type", "").split(";")[0].strip()
        if media_type not in content:
            errors.append(
                f"{where} -> {status}: content-type {media_type!r} is not one of {list(content)}"
            )
            return errors
        try:
            value = json.loads(body)
        except ValueError:
            return [*errors, f"{where} -> {status}: body is not JSON: {body!r:.200}"]
        schema_pointer = f"{pointer}/content/{_escape(media_type)}/schema"
        for error in self._validator(schema_pointer).iter_errors(value):
            location = "/".join(str(part) for part in error.absolute_path)
            errors.append(f"{where} -> {status}: body at /{location}: {error.message:.300}")
        return errors

    def _lookup(self, pointer: str, *, missing_ok: bool = False) -> Any:
        node: Any = self.document
        for escaped in pointer.removeprefix("#/").split("/"):
            part = escaped.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                if missing_ok:
                    return None
                raise KeyError(f"{pointer} is not in the OpenAPI document")
            node = node[part]
        return node

    def _validator(self, pointer: str) -> Draft202012Validator:
        if pointer not in self._validators:
            # Formats are assertions here: "" is no uuid, so an attribute sent empty
            # instead of left out fails the contract.
            self._validators[pointer] = Draft202012Validator(
                {"$ref": DOCUMENT_URI + pointer},
                registry=self._registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
        return self._validators[pointer]


class ContractRecorder:
    """An httpx response hook that checks every response and remembers what was wrong."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.validator = ContractValidator(document)
        self.failures: list[str] = []
        self.checked = 0
        self._lock = threading.Lock()

    def record(self, response: httpx.Response) -> None:
        """The hook: `event_hooks={"response": [recorder.record]}`."""
        response.read()
        request = response.request
        raw_path = request.url.raw_path.decode("ascii", errors="replace")
        errors = self.validator.check(
            request.method,
            raw_path.split("?")[0],
            response.status_code,
            response.headers,
            response.content,
        )
        with self._lock:
            self.checked += 1
            self.failures.extend(errors)

    def assert_all_valid(self) -> None:
        """Raise ContractViolation listing every response that broke the contract."""
        with self._lock:
            failures, self.failures = self.failures, []
        if failures:
            listing = "\n  ".join(failures[:50])
            more = f"\n  ... and {len(failures) - 50} more" if len(failures) > 50 else ""
            raise ContractViolation(
                f"{len(failures)} response(s) broke the OpenAPI contract:\n  {listing}{more}"
            )


def normalize_path(path: str) -> str:
    """The path matched against the document: runs of slashes merged (as Envoy's
    merge_slashes does), dot segments removed (RFC 3986 5.2.4), also when written as %2E.
    Envoy itself does not resolve dot segments (the shaper answers 400, which every
    operation documents), so resolving them here only picks the operation to check."""
    segments = re.sub(r"/{2,}", "/", path).split("/")[1:]
    output: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        dots = unquote(segment) if re.fullmatch(r"(\.|%2[eE])+", segment) else segment
        if dots in (".", ".."):
            if dots == ".." and output:
                output.pop()
            if last:
                output.append("")  # "/a/b/.." is "/a/", a directory
            continue
        output.append(segment)
    return "/" + "/".join(output)


def _path_item(key: str) -> _PathItem:
    pattern = "".join(
        "/[^/]+" if re.fullmatch(r"\{[^}]+\}", part) else "/" + re.escape(part)
        for part in key.split("/")[1:]
    )
    specificity = tuple(1 if re.fullmatch(r"\{[^}]+\}", part) else 0 for part in key.split("/")[1:])
    return _PathItem(key, re.compile(f"^{pattern}/?$"), (*specificity, 2))


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")
