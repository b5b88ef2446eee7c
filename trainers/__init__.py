"""The models: trainers that fit a candidate from a dataset (samples in the contract's shapes),
judge it and the champion on the same held-out data, and turn it into an artifact and back. The
registry finds each model type's trainer through `contract.model_types`. Nothing here knows
Kafka or SQL."""
