"""The PaxosKV operator: runs PaxosKVCluster resources as StatefulSets of node pods."""
