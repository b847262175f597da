"""A test-only API (protos/netweave/edgetest/v1/widgets.proto) and its test double.

The edge must handle request bodies, 201 + Location, DELETE with an empty body and
query parameters for whatever the descriptor set declares, whether or not the real protos
have such methods yet. The tests compile widgets.proto with protoc (grpc_tools) into their
own descriptor set, merged with gen/o2ims.pb so one Envoy serves both, and serve it from
this double with dynamic message classes (no generated Python code).
"""

from __future__ import annotations

import sysconfig
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, message_factory
from grpc_tools import protoc  # type: ignore[import-untyped]

from rest_facade.http_rules import load_pool
from server.subscriptions.rest import mark_created

from .support import FakeCore, start_fake_core

PROTO_ROOT = Path(__file__).resolve().parent / "protos"
WIDGET_PROTO = "netweave/edgetest/v1/widgets.proto"
WIDGET_SERVICE = "netweave.edgetest.v1.WidgetService"
WIDGETS = "/o2ims-edgeTest/v1/widgets"
SETTINGS = "/o2ims-edgeTest/v1/settings"
# A name the double answers with an unhandled exception (gRPC UNKNOWN, HTTP 500).
CRASHING_NAME = "crash-the-core"


def build_edge_descriptor(base: Path, out_dir: Path) -> Path:
    """`base` (gen/o2ims.pb) plus widgets.proto and its imports, as one descriptor set."""
    out_dir.mkdir(parents=True, exist_ok=True)
    widgets_set = out_dir / "widgets.pb"
    grpc_tools_protos = Path(protoc.__file__).resolve().parent / "_proto"
    site_packages = Path(sysconfig.get_paths()["purelib"])
    status = protoc.main(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{site_packages}",  # google/api/*.proto from googleapis-common-protos
            f"-I{grpc_tools_protos}",  # google/protobuf/*.proto
            "--include_imports",
            "--include_source_info",  # comments become OpenAPI descriptions
            f"--descriptor_set_out={widgets_set}",
            WIDGET_PROTO,
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed on {WIDGET_PROTO} (exit {status})")
    merged = descriptor_pb2.FileDescriptorSet()
    merged.ParseFromString(base.read_bytes())
    known = {file.name for file in merged.file}
    extra = descriptor_pb2.FileDescriptorSet()
    extra.ParseFromString(widgets_set.read_bytes())
    # protoc lists dependencies first, so appending in order keeps the set loadable.
    merged.file.extend(file for file in extra.file if file.name not in known)
    combined = out_dir / "edge.pb"
    combined.write_bytes(merged.SerializeToString())
    return combined


class WidgetStore:
    """The test double of a core serving WidgetService, with the REST conventions:
    201 + Location on create, NOT_FOUND for unknown ids, INVALID_ARGUMENT for bad input."""

    def __init__(self, descriptor_set: Path) -> None:
        pool = load_pool(descriptor_set)
        self._types: dict[str, Any] = {
            name: message_factory.GetMessageClass(
                pool.FindMessageTypeByName(f"netweave.edgetest.v1.{name}")
            )
            for name in ("Widget", "ListWidgetsResponse", "Settings")
        }
        self._empty: Any = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("google.protobuf.Empty")
        )
        self._service = pool.FindServiceByName(WIDGET_SERVICE)
        self._lock = threading.Lock()
        self.widgets: dict[str, Any] = {}
        self.requests: list[Any] = []

    def reset(self) -> None:
        with self._lock:
            self.widgets = {}
            self.requests = []

    def last_request(self) -> Any:
        with self._lock:
            assert self.requests, "the widget service received no call"
            return self.requests[-1]

    def new_widget(self, name: str) -> Any:
        widget = self._types["Widget"](widget_id=str(uuid.uuid4()), name=name)
        with self._lock:
            self.widgets[widget.widget_id] = widget
        return widget

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, Callable[[Any, grpc.ServicerContext], Any]] = {
            "ListWidgets": self._list,
            "CreateWidget": self._create,
            "GetWidget": self._get,
            "UpdateWidget": self._update,
            "DeleteWidget": self._delete,
            "PutSettings": self._put_settings,
        }
        handlers = {}
        for name, behaviour in methods.items():
            request_type: Any = message_factory.GetMessageClass(
                self._service.methods_by_name[name].input_type
            )
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                self._recording(behaviour),
                request_deserializer=request_type.FromString,
                response_serializer=lambda response: response.SerializeToString(),
            )
        return grpc.method_handlers_generic_handler(WIDGET_SERVICE, handlers)

    def _recording(
        self, behaviour: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                self.requests.append(request)
            return behaviour(request, context)

        return call

    def _list(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            widgets = list(self.widgets.values())
        return self._types["ListWidgetsResponse"](widgets=widgets)

    def _create(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.widget.name == CRASHING_NAME:
            raise RuntimeError("secret internal state: /var/lib/core 127.0.0.1:6379")
        if not request.widget.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, 'widget "name" is required')
        if request.widget.widget_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "widgetId is assigned by the server")
        widget = self._types["Widget"]()
        widget.CopyFrom(request.widget)
        widget.widget_id = str(uuid.uuid4())
        with self._lock:
            self.widgets[widget.widget_id] = widget
        # The core's REST convention for a create (envoy/modules/shaper.c reads it).
        mark_created(context, f"{WIDGETS}/{widget.widget_id}")
        return widget

    def _get(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._find(request.widget_id, context)

    def _update(self, request: Any, context: grpc.ServicerContext) -> Any:
        widget = self._find(request.widget_id, context)
        if request.widget.name:
            widget.name = request.widget.name
        return widget

    def _delete(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._find(request.widget_id, context)
        with self._lock:
            del self.widgets[request.widget_id]
        return self._empty()

    def _put_settings(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.retention_days < 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "retentionDays must be >= 1")
        return request

    def _find(self, widget_id: str, context: grpc.ServicerContext) -> Any:
        with self._lock:
            widget = self.widgets.get(widget_id)
        if widget is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"widget {widget_id!r} not found")
        return widget


@dataclass
class EdgeCore:
    """The core double serving both the inventory and the widget API."""

    core: FakeCore
    widgets: WidgetStore


def start_edge_core(descriptor_set: Path) -> EdgeCore:
    widgets = WidgetStore(descriptor_set)
    return EdgeCore(start_fake_core([widgets.handler()]), widgets)
