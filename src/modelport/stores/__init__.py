"""Stores: small async contracts with backends behind them (SQL, artifacts)."""
