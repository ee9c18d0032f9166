"""The shipped presets: one folder each (model.keras + metadata.json), read by exphil_keras.zoo."""
