"""The aggregator's HTTP handlers: the operations of the same spec as a node's, one module per
resource, each a thin async wrapper over ``aggregator.service``."""
