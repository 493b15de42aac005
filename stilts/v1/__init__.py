"""Generated gRPC stubs for the stilts.v1 API (see proto/; regenerate with ``make proto``)."""
