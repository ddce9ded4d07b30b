"""The Checkpoint resource contract (torch-free): names, spec view, status vocabulary."""
