"""Kubeconfig handling: the adapter's own credential, the admin credentials it publishes, and
the RBAC it needs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.kubernetes.cluster import KubeConfigError, KubeTarget, admin_credentials, connect

REPO_ROOT = Path(__file__).resolve().parents[3]
CA = b"-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nADMIN\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN EC PRIVATE KEY-----\nKEY\n-----END EC PRIVATE KEY-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(path: Path, user: dict[str, Any], context: str = "lab") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "lab-cluster",
                        "cluster": {
                            "server": "https://api.lab.example:6443",
                            "certificate-authority-data": b64(CA),
                        },
                    }
                ],
                "users": [{"name": "lab-admin", "user": user}],
                "contexts": [
                    {"name": context, "context": {"cluster": "lab-cluster", "user": "lab-admin"}}
                ],
                "current-context": context,
            }
        )
    )
    return path


def test_connect_reads_the_endpoint_ca_and_names(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"token": "t"})
    connection = connect(KubeTarget(path))
    try:
        assert connection.api_url == "https://api.lab.example:6443"
        assert base64.b64decode(connection.ca_cert) == CA
        assert (connection.context, connection.cluster_name) == ("lab", "lab-cluster")
    finally:
        connection.api.close()


def test_connect_names_a_missing_file_or_context(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="no such file"):
        connect(KubeTarget(tmp_path / "missing"))
    path = kubeconfig(tmp_path / "config", {"token": "t"})
    with pytest.raises(KubeConfigError, match=r"no context 'prod' \(contexts: lab\)"):
        connect(KubeTarget(path, "prod"))


def test_admin_credentials_are_the_users_client_certificate_and_key(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "admin",
        {"client-certificate-data": b64(CERT), "client-key-data": b64(KEY)},
    )
    assert admin_credentials(path) == {
        "admin_user": "lab-admin",
        "admin_client_cert": b64(CERT),
        "admin_client_key": b64(KEY),
    }


def test_a_token_only_admin_is_refused(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "admin", {"token": "secret"})
    with pytest.raises(KubeConfigError, match="no client certificate and key"):
        admin_credentials(path)


def test_rbac_grants_exactly_what_the_adapter_reads() -> None:
    documents = list(yaml.safe_load_all((REPO_ROOT / "adapters/kubernetes/rbac.yaml").read_text()))
    kinds = {document["kind"]: document for document in documents}
    assert set(kinds) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    assert all(d["metadata"]["labels"] == {"app": "netweave-gateway"} for d in documents)
    assert kinds["ServiceAccount"]["metadata"]["namespace"] == "o2ims-system"
    assert kinds["ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": [""],
            "resources": ["namespaces"],
            "resourceNames": ["kube-system"],
            "verbs": ["get"],
        },
        {"nonResourceURLs": ["/version"], "verbs": ["get"]},
    ]
    (subject,) = kinds["ClusterRoleBinding"]["subjects"]
    assert subject["name"] == kinds["ServiceAccount"]["metadata"]["name"]
