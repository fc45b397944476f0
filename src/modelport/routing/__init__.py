"""Traffic decisions as pure functions: routing policies, rollout guard verdicts, shadow
comparisons and the latency windows they read. Nothing here does I/O."""
