"""Destinations: one module per channel, each a `Sender`, and the private-address guard."""
