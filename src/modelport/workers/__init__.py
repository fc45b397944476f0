"""Stream consumers and the runtime that drives them (``modelport worker``, or in-process)."""
