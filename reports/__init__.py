"""What comes out: result records → one long pandas table → paper-style tables."""

from .collect import collect
from .schema import SCHEMA_VERSION, RecordError, record_rows, validate_record
from .tables import aggregate, method_table, write_tables

__all__ = ["collect", "SCHEMA_VERSION", "RecordError", "record_rows", "validate_record", "aggregate",
           "method_table", "write_tables"]
