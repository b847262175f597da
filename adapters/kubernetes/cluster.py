"""Reaching the cluster: client configuration from a kubeconfig or the pod's service
account, the cluster's identity, and the admin credentials the profile may publish.

The official client does configuration, authentication, TLS and request building;
responses are read raw and parsed with json, because its model deserialization costs
far more than the adapter's whole mapping. Requests go through its ApiClient directly
(`get`), not its generated API classes: importing CoreV1Api alone takes over a second
and 20 MiB (its pydantic models), for the three GET requests the adapter makes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException
from kubernetes.config import incluster_config, kube_config
from kubernetes.config.config_exception import ConfigException

IN_CLUSTER_NAME: Final = "in-cluster"
REQUEST_TIMEOUT: Final = (10.0, 30.0)  # connect, read: seconds


class KubeConfigError(Exception):
    """The configuration names no usable cluster (or admin credentials)."""


@dataclass(frozen=True)
class KubeTarget:
    """Where the cluster's configuration comes from: a kubeconfig (and context), or,
    with no kubeconfig, the service account of the pod the adapter runs in."""

    kubeconfig: Path | None
    context: str = ""
    # In a pod (no kubeconfig): the service account's files and the API server's address,
    # as Kubernetes provides them (KUBERNETES_SERVICE_HOST/PORT).
    service_account_dir: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    service_host: str = ""
    service_port: str = ""


@dataclass(frozen=True)
class Connection:
    api: Any  # kubernetes.client.ApiClient
    context: str  # the context used ("" in-cluster)
    cluster_name: str  # the context's cluster ("in-cluster" in-cluster)
    api_url: str
    ca_cert: str  # base64 PEM of the CA the API server is verified against; "" if none


def _read_b64(path: str | None) -> str:
    if not path:
        return ""
    return base64.b64encode(Path(path).read_bytes()).decode()


def connect(target: KubeTarget) -> Connection:
    """A client for `target`, re-reading its files (a rotated credential is picked up).

    Raises KubeConfigError when the configuration is missing or unusable."""
    configuration = kube_client.Configuration()
    try:
        if target.kubeconfig is None:
            if not (target.service_host and target.service_port):
                raise KubeConfigError(
                    "no kubeconfig, and not in a pod (KUBERNETES_SERVICE_HOST and "
                    "KUBERNETES_SERVICE_PORT are not set)"
                )
            loader = incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=str(target.service_account_dir / "token"),
                cert_filename=str(target.service_account_dir / "ca.crt"),
                environ={
                    incluster_config.SERVICE_HOST_ENV_NAME: target.service_host,
                    incluster_config.SERVICE_PORT_ENV_NAME: target.service_port,
                },
            )
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
            context, cluster_name = "", IN_CLUSTER_NAME
        else:
            if not target.kubeconfig.is_file():
                raise KubeConfigError(f"kubeconfig {target.kubeconfig}: no such file")
            contexts, current = kube_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                str(target.kubeconfig)
            )
            wanted = target.context or (current or {}).get("name", "")
            chosen = next((item for item in contexts or () if item.get("name") == wanted), None)
            if chosen is None:
                known = ", ".join(item.get("name", "") for item in contexts or ()) or "none"
                raise KubeConfigError(
                    f"kubeconfig {target.kubeconfig}: no context {wanted!r} (contexts: {known})"
                )
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(target.kubeconfig),
                context=wanted,
                client_configuration=configuration,
                persist_config=False,
            )
            context = wanted
            cluster_name = str(chosen.get("context", {}).get("cluster") or wanted)
        ca_cert = _read_b64(configuration.ssl_ca_cert)
    except ConfigException as error:
        where = "in-cluster service account" if target.kubeconfig is None else target.kubeconfig
        raise KubeConfigError(f"{where}: {error}") from error
    except OSError as error:
        raise KubeConfigError(f"cannot read the cluster configuration: {error}") from error
    return Connection(
        api=kube_client.ApiClient(configuration),
        context=context,
        cluster_name=cluster_name,
        api_url=str(configuration.host),
        ca_cert=ca_cert,
    )


Timeout = float | tuple[float, float]


def get(api: Any, path: str, query: Sequence[tuple[str, Any]] = (), *, timeout: Timeout) -> Any:
    """GET `path` (JSON) as the generated API classes would (the client's headers,
    authentication and query encoding): the raw urllib3 response, its body not read.
    A non-2xx answer raises the client's ApiException (its subclass for the status)."""
    method, url, headers, body, post_params = api.param_serialize(
        method="GET",
        resource_path=path,
        query_params=list(query),
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, headers, body, post_params, _request_timeout=timeout)
    if not 200 <= response.status <= 299:
        response.read()
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return response.response


def read_json(response: Any) -> Any:
    """The JSON body of a raw (urllib3) response, which is then released."""
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def cluster_uid_and_version(api: Any) -> tuple[str, str]:
    """The uid of namespace kube-system (the cluster's identity) and the server's
    gitVersion (raises the client's ApiException / urllib3 errors as they come)."""
    namespace = read_json(get(api, "/api/v1/namespaces/kube-system", timeout=REQUEST_TIMEOUT))
    version = read_json(get(api, "/version/", timeout=REQUEST_TIMEOUT))
    uid = str((namespace.get("metadata") or {}).get("uid") or "")
    if not uid:
        raise ValueError("namespace kube-system has no uid")
    return uid, str(version.get("gitVersion") or "")


def admin_credentials(kubeconfig: Path, context: str = "") -> dict[str, str]:
    """The admin_* profile fields from a kubeconfig's user: its client certificate and
    key (base64 PEM). A token-only user is refused: the profile has no token field, and
    a credential under a field the core does not know would be served to every reader."""
    configuration = kube_client.Configuration()
    try:
        contexts, current = kube_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            str(kubeconfig)
        )
        wanted = context or (current or {}).get("name", "")
        chosen = next((item for item in contexts or () if item.get("name") == wanted), None)
        if chosen is None:
            raise KubeConfigError(f"admin kubeconfig {kubeconfig}: no context {wanted!r}")
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig),
            context=wanted,
            client_configuration=configuration,
            persist_config=False,
        )
        cert, key = _read_b64(configuration.cert_file), _read_b64(configuration.key_file)
    except ConfigException as error:
        raise KubeConfigError(f"admin kubeconfig {kubeconfig}: {error}") from error
    except OSError as error:
        raise KubeConfigError(f"admin kubeconfig {kubeconfig}: {error}") from error
    if not (cert and key):
        raise KubeConfigError(
            f"admin kubeconfig {kubeconfig}: its user has no client certificate and key; "
            "only those can be published as the profile's admin credentials"
        )
    user = str(chosen.get("context", {}).get("user") or wanted)
    return {"admin_user": user, "admin_client_cert": cert, "admin_client_key": key}
