"""The model side of a worker, which knows nothing of queues: model directory, execution
providers, encoder, pooling, export and the STS-B quality yardstick."""
