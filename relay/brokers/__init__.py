"""Broker destinations (RabbitMQ, NATS JetStream) behind the `Destination` interface.

The clients are imported by the destination modules only, so a relay without broker subscribers
never loads them.
"""
