"""The Hubble UI (`hexlane hubble ui`): a web page with a service map and a live flow table,
served by hexlane on :8081 and fed only by an Observer's gRPC API (Hubble Relay, or one
agent's Hubble server).

- `servicemap` (pure): flows -> workloads as boxes grouped by namespace, client -> server
  edges by protocol, port and verdict with their rates;
- `views` (pure): the page's filters as FlowFilters, Observer answers as the page's JSON;
- `server` (edge): the aiohttp app: the page (`static/`, hexlane's own HTML, JavaScript and
  CSS, no third-party code) and its JSON API, over one gRPC channel to the Observer.

Inspect it with `curl localhost:8081/api/status` or `curl localhost:8081/api/map`;
docs/hubble.md ("Hubble UI") says more.
"""

UI_PORT = 8081  # the Hubble UI container's port (its Service listens on 80)
DEFAULT_LISTEN = f":{UI_PORT}"
DEFAULT_SERVER = "localhost:4245"  # Hubble Relay, as the hubble CLI defaults to
