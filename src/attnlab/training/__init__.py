"""Training and running models: `train` (the one training loop and its objectives), `run` (a
language model's run: start, resume), `seq2seq_run` (the encoder-decoder's), `optim` (optimizers and
schedules) and `checkpoint` (safetensors + JSON, written atomically, checked when read)."""
