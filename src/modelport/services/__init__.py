"""Use cases, independent of any transport. HTTP, gRPC and the CLI call these methods."""
