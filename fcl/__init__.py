"""fcl: the FinCoach continuous-learning service. Every package is imported under `fcl.`:
the launcher's own modules (`fcl.cli`, the local stack `fcl.stack`, `fcl.demo`) and the service
packages (`fcl.streams`, `fcl.worker`, `fcl.web`, `fcl.serving`), which use `fcl.storage`,
`fcl.trainers` and `fcl.messaging`, which share the base `fcl.contract`. In the repository the
service packages sit at the top and `fcl/<name>` links to each; installed, they are fcl's
subpackages, and nothing generic (`web`, `storage`) lands on an application's import path.
Nothing imports the launcher's modules back.
"""

from fcl.contract import __version__

__all__ = ["__version__"]
