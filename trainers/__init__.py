"""The models: trainers that take a dataset (samples in the contract's shapes), settings and a
seed and return a fitted model, its metrics, an artifact and a manifest. Nothing here knows
Kafka or SQL."""
