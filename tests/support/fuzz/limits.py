"""The limits every fuzzed input must stay within."""
from transforms.decode import imaging

# Readers refuse records and tar members larger than this (the pipeline's
# --max-image-bytes; seeds are a few KB, so lies about sizes go past it).
READ_LIMIT = 1 << 20

# Decoding as the pipeline does, with --max-pixels lowered to 4 MP so that
# the memory bound below means something: an image within the pixel limit
# may legitimately take a few copies of 4 bytes a pixel while converting.
DECODE_CONFIG = imaging.DecodeConfig(max_pixels=1 << 22)

# Per input: a hang fails the test after this much CPU time.
TIME_LIMIT_S = 2.0

# Per input: growth of the process's peak RSS over its RSS before the
# input. 4 MP x 4 bytes x a few copies is ~100 MB; a decode that ignored
# the pixel limit (or a reader that believed a declared size) is far more.
RSS_LIMIT_MB = 256
