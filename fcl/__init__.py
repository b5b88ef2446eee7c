"""fcl: the FinCoach continuous-learning service.

This package holds what wires the service together: settings, the command line and the local
stack (a real Apache Kafka broker and PostgreSQL server, no Docker). The service's parts live in
the sibling packages `streams`, `trainers`, `storage` and `web`.
"""

__version__ = "0.1.0"
