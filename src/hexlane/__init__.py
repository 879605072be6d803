"""hexlane: Kubernetes networking in Python and eBPF, in the spirit of Cilium.

Layers, bottom to top (enforced by the import-linter contract in pyproject.toml):
pure cores (model, config, ipam, lb, l2, policy) < edges (k8s, datapath, apiserver)
< daemons (agent, operator, hubble, cni) < lab < cli.
"""

__version__ = "0.1.0"
