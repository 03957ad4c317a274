"""Real-time delivery of new messages to subscribers, on one process or many.

Mutations call `Broker.publish` inside their transaction; subscribers hear of the new messages
only once that transaction has committed. `make_broker` picks the backend from the database URL.
"""
