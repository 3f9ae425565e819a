"""What comes out: result records → one long pandas table → paper-style tables, figures and an HTML report."""

from .collect import Results, cell_states, collect, read_results, train_logs, train_summaries
from .layout import LayoutError, ReportLayout, TableLayout, parse_layout
from .report import FORMATS, Report, ReportError, build_report, parse_formats
from .schema import SCHEMA_VERSION, OldSchemaError, RecordError, record_rows, validate_record
from .stats import aggregate, paired_deltas, paired_test
from .tables import Cell, ReportData, Table, build_table, method_table, prepare, write_tables

__all__ = ["Results", "cell_states", "collect", "read_results", "train_logs", "train_summaries", "LayoutError",
           "ReportLayout", "TableLayout", "parse_layout", "FORMATS", "Report", "ReportError", "build_report",
           "parse_formats", "SCHEMA_VERSION", "OldSchemaError", "RecordError", "record_rows", "validate_record",
           "aggregate", "paired_deltas", "paired_test", "Cell", "ReportData", "Table", "build_table",
           "method_table", "prepare", "write_tables"]
