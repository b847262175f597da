"""The Kubernetes adapter: one cluster's nodes as O2ims inventory, kept current by a watch.

Modules: `mapping_file` (the optional YAML that overrides the mapping), `mapping` (pure
functions: Node JSON -> the O2ims view of it -> domain objects), `condition_alarms` (the
node conditions that are alarms), `alarms` (the alarm dictionary, and a node's abnormal
conditions as active alarms), `inventory` (the objects derived from every node, changed
incrementally), `reflector` (list + watch of nodes), `cluster` (kubeconfig, cluster
identity, profile credentials), `__main__` (the process).
"""
