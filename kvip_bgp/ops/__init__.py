"""What operators see: the HTTP endpoints, logging, the status/explain rendering."""
