"""fcl: the FinCoach continuous-learning service. This package is the launcher: the command line
(`fcl.cli`), the local stack (`fcl.stack`: a real Apache Kafka broker and PostgreSQL server, no
Docker) and the demo (`fcl.demo`). It starts the services (`streams`, `worker`, `web`), which use
`storage`, `trainers` and `messaging`, which share the base `contract`; nothing imports this
package back.
"""

from contract import __version__

__all__ = ["__version__"]
