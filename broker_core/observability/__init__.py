"""What the node (and the aggregator) says about itself: request ids, logs and metrics."""
