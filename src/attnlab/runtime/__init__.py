"""Runtime helpers every layer may use, one concern a module: `devices` (devices, precision), `files`
(atomic writes, JSON, output paths), `checks` (JSON fields, memory), `environment` (notices, the cache
folder, `attnlab info`), `threads` (PyTorch's CPU threads) and `distributed` (torchrun processes)."""
