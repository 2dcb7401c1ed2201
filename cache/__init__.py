"""Response cache: canonical request keys, exact and semantic lookups in Redis, SSE assembly and replay."""
