"""Looking inside models: parameter and FLOPs counts, traces, attention and embedding pictures."""
