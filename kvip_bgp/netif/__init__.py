"""Local addresses and kernel routes through netlink (pyroute2 only in ``netlink``)."""
