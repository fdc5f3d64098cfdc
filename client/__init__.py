"""The ebroker client: a command line for the people who book slots (``python -m client``,
``eb`` once installed). It speaks only the wire format of the API (openapi/ebroker.yaml), to a
node or an aggregator alike, and imports nothing of the server packages.

One module per concern: :mod:`.documents` turns flags into the standard's documents (pure
functions), :mod:`.api` talks HTTP, :mod:`.profiles` finds the URL and the token, :mod:`.oidc`
logs in with a device code, :mod:`.output` prints tables, JSON or YAML, and :mod:`.app` holds
the commands."""
