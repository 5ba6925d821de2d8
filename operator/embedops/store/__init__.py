"""pgvector storage: versioned tables, catalog, cut-over and the embedded server."""
