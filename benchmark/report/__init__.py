"""From records to results: aggregation per cell, statistics, tables, figures, the report."""
