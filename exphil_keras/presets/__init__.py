"""The shipped presets: one keras-hub preset folder each, read by exphil_keras.zoo.

Each holds config.json and model.weights.h5 (the PolicyModel), metadata.json (what it is, what
it scored, the sha256 of the other files), training.json and markov1.json.
"""
