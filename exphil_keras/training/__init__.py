"""What `exphil_keras.train` is made of: its options, data, schedules and callbacks."""
