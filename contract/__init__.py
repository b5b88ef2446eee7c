"""The shared base of fcl: what every part of the service agrees on and nothing else.

Settings (`contract.settings`), the model-type registry (`contract.model_types`), topic names
(`contract.topics`), the enums of the domain (`contract.enums`) and the contract's event models
(`contract.events`). Every other package imports this one; this one imports none of them.
"""

__version__ = "0.1.0"
