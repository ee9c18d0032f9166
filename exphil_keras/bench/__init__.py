"""`exphil bench`, split by job: `run` trains and times every backbone, `latency_worker` times
in a one-thread process, `render` writes the tables and docs blocks, `plots` the PNGs."""
