"""The message broker of scaled mode: API nodes publish what platforms send, workers consume it.

FastStream carries the messages on NATS JetStream, Redis Streams or Kafka (transport.py); the
envelope (envelope.py) is the same bytes on all three.
"""
