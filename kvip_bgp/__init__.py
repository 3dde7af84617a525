"""kvip-bgp: a BGP-mode load-balancer speaker built on ExaBGP."""
