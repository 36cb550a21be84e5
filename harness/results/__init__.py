"""Results: the results.json schema and run store, known failures, the gate's decision, comparison with a baseline."""
