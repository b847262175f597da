"""`make run`'s Kubernetes clusters: NETWEAVE_KUBECONFIG (files) and NETWEAVE_KUBE_CONTEXT
(contexts) become one adapter each, with unique names and their own ports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devstack.stack import KubeCluster, StackConfig, kube_clusters


def kubeconfig(path: Path, contexts: list[str], current: str | None) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": c, "cluster": {"server": f"https://{c}.example:6443"}} for c in contexts
        ],
        "users": [{"name": c, "user": {"token": "t"}} for c in contexts],
        "contexts": [{"name": c, "context": {"cluster": c, "user": c}} for c in contexts],
        **({"current-context": current} if current else {}),
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_one_adapter_per_named_context_found_in_whichever_file_holds_it(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", ["edge-1", "edge-2"], "edge-1")
    second = kubeconfig(tmp_path / "b", ["core"], "core")
    clusters = kube_clusters([first, second], ["core", "edge-2"], 50071)
    assert clusters == (
        KubeCluster(second.resolve(), "core", "kubernetes-core", 50071),
        KubeCluster(first.resolve(), "edge-2", "kubernetes-edge-2", 50072),
    )


def test_without_contexts_one_adapter_per_file_on_its_current_context(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", ["default"], "default")
    second = kubeconfig(tmp_path / "b", ["default"], "default")
    third = kubeconfig(tmp_path / "lab.yaml", ["x"], None)
    clusters = kube_clusters([first, second, third], [], 0)
    # Same context name in two files: names made unique; no current context: the file's name.
    assert [c.name for c in clusters] == [
        "kubernetes-default",
        "kubernetes-default-2",
        "kubernetes-lab",
    ]
    assert all(c.context is None and c.port == 0 for c in clusters)


def test_a_context_no_file_holds_is_refused_naming_the_variable(tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "a", ["edge-1"], "edge-1")
    with pytest.raises(ValueError, match="NETWEAVE_KUBE_CONTEXT names 'edge-9'"):
        kube_clusters([config], ["edge-9"], 0)


@pytest.mark.parametrize("content", [None, "- a list\n", "key: [unclosed\n"])
def test_an_unreadable_kubeconfig_is_refused_naming_the_variable(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "config"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match="NETWEAVE_KUBECONFIG"):
        StackConfig.from_env({"NETWEAVE_KUBECONFIG": str(path)})


def test_make_run_reads_the_clusters_from_the_environment(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", ["edge-1", "edge-2"], "edge-1")
    config = StackConfig.from_env(
        {
            "NETWEAVE_KUBECONFIG": str(first),
            "NETWEAVE_KUBE_CONTEXT": "edge-2,edge-1",
            "NETWEAVE_KUBE_ADAPTER_PORT": "6000",
        }
    )
    assert [(c.name, c.port) for c in config.kube_clusters] == [
        ("kubernetes-edge-2", 6000),
        ("kubernetes-edge-1", 6001),
    ]
    assert StackConfig.from_env({}).kube_clusters == ()
