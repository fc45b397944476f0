"""Pure retrieval functions: rank fusion, relevance metrics."""
