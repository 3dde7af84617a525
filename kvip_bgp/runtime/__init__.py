"""The threads that own state, the queues between them and the messages on those queues."""
