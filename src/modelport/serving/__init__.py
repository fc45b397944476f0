"""The serving engine: tensor codec, signatures, runtimes, the dynamic batcher and the model pool."""
