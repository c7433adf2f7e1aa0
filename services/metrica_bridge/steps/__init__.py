"""The processing pipeline, one module per step:
decode → validate → dedupe → enrich → order rules → batch → send → persist (and dlq for
failures)."""
