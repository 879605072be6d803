"""Fixtures for pod-network tests: the CNI test helpers (tests/cni/cni_helpers.py) and the
packet helpers (tests/datapath/bpf_packets.py) made importable here, since the test
directories are not packages."""

from __future__ import annotations

import sys
from pathlib import Path

for helpers in ("cni", "datapath"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / helpers))
