"""The save and load flows: each a short list of steps over the state/ and engine/ layers."""
