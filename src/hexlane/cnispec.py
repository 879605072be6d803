"""What the CNI plugin (`hexlane.cni`) and the node's agent (`hexlane.agent`) agree on.

The CNI spec's error codes and hexlane's own (100+, "plugin specific"), the syntax of a
container ID, where the state lives and the directory of DELs queued while the agent is down.
The plugin and the agent are siblings in one layer and may not import each other, so this
lives beside both, and so does the rule for interface names. Standard library only and nothing
else of hexlane: the runtime starts the plugin for every call, and the plugin imports this
module.
"""

from __future__ import annotations

import re

# CNI error codes (spec 1.0/1.1)
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11
ERR_NOT_AVAILABLE = 50
# hexlane's own
ERR_SETUP_FAILED = 100
ERR_IPAM_EXHAUSTED = 101
ERR_CHECK_MISMATCH = 102
ERR_PERMISSION = 103  # the agent's API refused a caller that is not root nor CAP_NET_ADMIN

#: the state dir when neither $HEXLANE_STATE_DIR nor the config names one
DEFAULT_STATE_DIR = "/var/run/hexlane"
#: under the state dir: DELs the plugin could not hand over, carried out when the agent starts
DEL_QUEUE_DIR = "cni-del-queue"
#: CNI_CONTAINERID: letters, digits, '_', '.', '-', not starting with one of the last three
CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
_IFNAME = re.compile(r"[^/:\s]{1,15}")


def valid_ifname(name: str) -> bool:
    """CNI_IFNAME as libcni checks it: a name Linux takes for an interface (1-15 characters,
    no '/', ':' or white space, not "." or ".."). It also names a file of the DEL queue."""
    return bool(_IFNAME.fullmatch(name)) and name not in (".", "..")
