"""Everything that speaks ExaBGP: its config file, its command lines, its pipe, its process."""
