"""Secret-span detection: byte spans, the tagger, chunked inference, scoring and baselines."""
