"""Kafka plumbing shared by the consumers, the DLQ, replay, the simulator and the tests."""
