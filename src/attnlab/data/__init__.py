"""The data layer: `corpus` (texts, splits, tokenized batches: `prepare_data`), `tokens` (token streams
and the token files' one writer), `token_files` (`attnlab prepare`), `builtin_corpus` (the stories
shipped with the package) and `tasks` (the encoder-decoder's source -> target tasks)."""
