"""Network policy, the pure core: security identities (`identity`), Kubernetes NetworkPolicy
resolved into per-endpoint policy map entries (`resolve`), the maps' lookups as the datapath
will do them (`maps`), and a deliberately simple evaluator of the NetworkPolicy text that the
property tests hold the resolution against (`reference`). No I/O: the agent and the operator
act on what these functions decide. See docs/policy.md.
"""
