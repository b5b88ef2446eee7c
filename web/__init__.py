"""The aiohttp API and dashboard, served from PostgreSQL (CONTRACT.md, "HTTP API")."""
