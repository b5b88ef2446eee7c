"""The Faust side of fcl: the app, its topics and agents (threshold events become jobs, samples
are ingested). Only this package (and the event publisher) speaks Kafka."""
