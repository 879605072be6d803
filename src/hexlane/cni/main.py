"""Entry point of the `hexlane-cni` executable (the CNI plugin).

Only VERSION is answered until the agent's endpoint API exists; every other command returns
the CNI spec's error 50 ("plugin not available") with a message saying why, as the spec asks
of a plugin whose daemon cannot be reached.
"""

from __future__ import annotations

import json
import os
import sys

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def main() -> int:
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        json.dump({"cniVersion": "1.1.0", "supportedVersions": list(SUPPORTED_VERSIONS)},
                  sys.stdout)
        return 0
    json.dump({"cniVersion": "1.1.0", "code": 50 if command else 4,
               "msg": "hexlane agent unavailable" if command else "CNI_COMMAND is not set",
               "details": "the hexlane agent's endpoint API is not reachable on this node"},
              sys.stdout)
    return 1
