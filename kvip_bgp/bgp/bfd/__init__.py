"""BFD (RFC 5880/5881): a strict packet codec, a pure session state machine, one thread."""
