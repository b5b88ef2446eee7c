"""Kafka for the services that are not the Faust app: topic administration (`admin`), a producer
that connects in the background and feeds the outbox relays (`producer`), and the client other
Python services use to send samples and threshold events (`client`). Knows the contract, not SQL.
"""
