"""One booking across several sites, all or nothing.

A combined request names parts, each a request as a node takes it, for a site (an upstream of
the aggregator) or any. Phase 1 (``offers``) asks each part's upstreams for offers, which hold
their slots, and pairs them into combined slots where every part starts within
``together.within`` of the others; every part offer no combined offer uses is rejected. Phase 2
(``booking``) accepts one combined offer: the intent is written to the aggregator's own store
first, then every part is accepted on its node; if any part fails (a lost race, a node down, a
timeout) the parts already accepted are cancelled and the rest rejected. ``recovery`` finishes
or undoes, at start-up and then with back-off, what a killed aggregator (or a node down) left
half done.
"""
