"""Bits shared by the example services: the tiny HTTP framework, basic auth, identity, tracing."""
