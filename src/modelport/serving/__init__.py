"""The serving engine: tensor codec, signatures, runtimes, batcher and model pool."""
