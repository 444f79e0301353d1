"""The bus between roles (Kafka, or in-process for `--roles all`) behind one interface."""

from notifi.bus.base import Bus, BusError, Consumer, Record, Topics, topic_names
from notifi.bus.kafka import KafkaBus
from notifi.bus.memory import MemoryBus

__all__ = [
    "Bus",
    "BusError",
    "Consumer",
    "KafkaBus",
    "MemoryBus",
    "Record",
    "Topics",
    "topic_names",
]
