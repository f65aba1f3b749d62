"""Payload encryption: the keys, the codec every Temporal client uses, and the codec server for operators."""
