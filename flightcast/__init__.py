"""The composition root: `flightcast run` starts the Flight server, the pipelines and the HTTP API."""
