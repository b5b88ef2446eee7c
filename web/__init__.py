"""The aiohttp API and dashboard, served from PostgreSQL (docs/contract.md, "HTTP API")."""
