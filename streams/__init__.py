"""The Faust side of fcl: the app and its agents (threshold events become jobs, samples are
ingested, bad input is dead-lettered), the parsing of raw input records, and `fcl watch`."""
