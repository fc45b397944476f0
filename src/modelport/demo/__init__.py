"""The demo: two models built locally, without any network access."""
