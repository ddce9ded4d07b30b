"""Node-local checkpoints: nvidia-resiliency-ext's manager and layout, Cairn's replication."""
