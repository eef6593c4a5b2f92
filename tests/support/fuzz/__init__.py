"""Fuzzing the decoders and the shard readers (issue 11); see test_fuzz.py."""
