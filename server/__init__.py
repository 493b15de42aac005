"""stilts.server."""
