"""HTTP transport: parse, call one service method, map errors. Nothing imports this package."""
