"""TFDS dataset builders shipped with exphil_keras."""
