"""Data: rows -> prompt/answer segments -> token ids and labels (-100 = not trained), cached.

The pipeline lives in :mod:`ftsweep.data.pipeline`; this package re-exports what other modules use.
"""

from ftsweep.data.encode import IGNORE_INDEX
from ftsweep.data.errors import DataError
from ftsweep.data.pipeline import DataBundle, build_datasets, encode_records, render

__all__ = ["IGNORE_INDEX", "DataBundle", "DataError", "build_datasets", "encode_records", "render"]
