"""Data staging's sandbox: which locations a data resource may be staged from, and the copy and
download that keep to it.

Staging runs on the node's host with the node's reach, so its rules are the node's boundary:
``rules`` (the site's rules and the request-time check), ``addresses`` (which IP addresses a
download may reach), ``files`` (copies confined to the data roots, opened without following
links), ``fetch`` (downloads that connect only to checked addresses) and ``worker`` (the same,
in a process of the session's user).
"""
