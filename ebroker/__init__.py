"""The ``ebroker`` command, above both rooms it runs: a broker node (:mod:`broker_core`) and an
aggregator over nodes (:mod:`aggregator`). Neither of them imports this package."""
