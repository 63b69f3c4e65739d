"""The applications: `lab` (the MLP against the Transformer, with its report), `compare` (variants
side by side), `bench` (speed) and `report` (the lab's and compare's HTML pages)."""
